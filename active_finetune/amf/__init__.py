"""AMF: target states, embeddings, GP information gain, task selection strategies, the loop."""
