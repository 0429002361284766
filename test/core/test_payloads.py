"""The loop's payload contract: round trips, each bad field refused by name, schemas in the doc."""

import dataclasses
import json
import math
from pathlib import Path
import typing

from active_finetune import payloads
from active_finetune.payloads import PayloadError
import pytest

SHA = 'ab' * 32

EXAMPLES = {
    'operator/next_task': payloads.NextTask(
        task='push-v3', request_id=4, round=1, tasks_this_round=['push-v3', 'reach-v3'],
        strategy='amf', scores={'push-v3': 0.45, 'reach-v3': 0.1},
        terms={'push-v3': {'reach-v3': 0.2}}, demo_counts={'push-v3': 1, 'reach-v3': 0},
        demos_used=2, budget=8, budget_remaining=6, demos_per_round=2, policy_version=1,
        skipped=['drawer-close-v3'], done=False, reason='amf selection', select_s=0.25),
    'recorder/status': payloads.RecorderStatus(
        state='recording', task='push-v3', request_id=4, duration_s=1.5, frames=30, dropped=1,
        path='/data/episode_000001_push.mcap.partial', message='recording episode 1'),
    'recorder/episode': payloads.EpisodeSaved(
        path='/data/episode_000001_push.mcap', sha256=SHA, task='push-v3', success=True,
        steps=60, frames=61, request_id=4, dropped=0, duration_s=3.2, bag_path='/data/ep1'),
    'recorder/mark': payloads.EpisodeMark(success=False, note='gripper slipped'),
    'trainer/checkpoint': payloads.CheckpointAnnounced(
        version=2, sha256=SHA, path='/ck/v0002', round=1, demos_used=4, step=300,
        metrics={'loss': -2.5}, config={'tasks': ['push-v3']}, size_bytes=4096,
        chunk_bytes=1024, weights_b64='AAAA'),
    'trainer/checkpoint_request': payloads.CheckpointRequest(
        sha256=SHA, chunks=[0, 3], requester='policy'),
    'trainer/status': payloads.TrainerStatus(
        state='training', round=1, progress=0.5, demos_available=4, demos_usable=3,
        demos_unreadable=0, version=1, demos_needed=4, demos_per_round=2, message='step 150'),
    'trainer/evaluation': payloads.Evaluation(
        success={'push-v3': 0.2, 'reach-v3': 1.0}, version=2, mean=0.6, episodes=5,
        reused_from_pretrained=['reach-v3']),
    'policy/status': payloads.PolicyStatus(
        state='running', code='ok', reason='', task='push-v3', tasks=['push-v3', 'reach-v3'],
        version=2, sha256=SHA, refused=payloads.Refusal(version=3, sha256=SHA, reason='nan',
                                                        number=1),
        rollback_versions=[1, 0], device='cpu'),
    'mux/status': payloads.MuxStatus(source='policy', estop=True, code='estop', reason='held'),
    'sim/status': payloads.SimStatus(
        state='demonstrating', task='push-v3', episode=3, seed=11, request_id=4,
        last_episode=payloads.SimEpisode(task='reach-v3', episode=2, success=True, steps=40,
                                         request_id=None)),
}


def test_every_topic_has_an_example_and_a_decode_function():
    assert set(EXAMPLES) == set(payloads.PAYLOADS)
    for topic, cls in payloads.PAYLOADS.items():
        assert cls.TOPIC == topic
        name = {'trainer/checkpoint': 'decode_checkpoint',
                'trainer/evaluation': 'decode_evaluation'}.get(
            topic, 'decode_' + ''.join('_' + c.lower() if c.isupper() else c
                                       for c in cls.__name__).lstrip('_'))
        assert getattr(payloads, name)(payloads.encode(EXAMPLES[topic])) == EXAMPLES[topic]


@pytest.mark.parametrize('topic', sorted(EXAMPLES))
def test_round_trip(topic):
    payload = EXAMPLES[topic]
    text = payloads.encode(payload)
    data = json.loads(text)
    assert data['schema_version'] == payloads.SCHEMA_VERSION
    assert payloads.decode(topic, text) == payload
    assert payloads.decode(type(payload), text.encode()) == payload
    plain = payloads.decode_dict(topic, text)
    assert plain == payload.to_dict()
    assert plain == {k: v for k, v in data.items() if k != 'schema_version'}


@pytest.mark.parametrize('topic', sorted(EXAMPLES))
def test_only_the_required_fields_get_the_defaults(topic):
    cls = payloads.PAYLOADS[topic]
    full = EXAMPLES[topic].to_dict()
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    minimal = payloads.decode(topic, json.dumps({k: full[k] for k in required}))
    for item in dataclasses.fields(cls):
        expected = full[item.name] if item.name in required else (
            item.default if item.default is not dataclasses.MISSING else item.default_factory())
        assert getattr(minimal, item.name) == expected
    for name in required:
        text = json.dumps({k: full[k] for k in required if k != name})
        with pytest.raises(PayloadError, match=f"missing field '{name}'") as error:
            payloads.decode(topic, text)
        assert error.value.field == name and error.value.topic == topic


def _wrong_value(annotation):
    """Return a JSON value of the wrong type for ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        annotation = [a for a in typing.get_args(annotation) if a is not type(None)][0]
        origin = typing.get_origin(annotation)
    if annotation is str:
        return 3
    if annotation in (int, float):
        return 'many'
    if annotation is bool:
        return 1
    if origin is list or annotation is list:
        return 'not a list'
    return ['not an object']


def _bad_cases():
    cases = []
    for topic, cls in payloads.PAYLOADS.items():
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            cases.append((topic, item.name, _wrong_value(hints[item.name]), item.name))
            meta = item.metadata
            if 'choices' in meta:
                cases.append((topic, item.name, 'no-such-state', item.name))
            if 'minimum' in meta:
                cases.append((topic, item.name, meta['minimum'] - 1, item.name))
            if 'pattern' in meta:
                cases.append((topic, item.name, 'abc', item.name))
    # Inside containers and nested objects: the dotted path names the field.
    cases += [
        ('operator/next_task', 'scores', {'reach-v3': 'high'}, 'scores.reach-v3'),
        ('operator/next_task', 'terms', {'a': {'b': None}}, 'terms.a.b'),
        ('operator/next_task', 'demo_counts', {'reach-v3': 1.5}, 'demo_counts.reach-v3'),
        ('operator/next_task', 'tasks_this_round', ['a', 2], 'tasks_this_round[1]'),
        ('operator/next_task', 'budget', True, 'budget'),
        ('operator/next_task', 'budget', 3.5, 'budget'),
        ('trainer/evaluation', 'success', {'reach-v3': True}, 'success.reach-v3'),
        ('policy/status', 'refused', {'number': 'x'}, 'refused.number'),
        ('policy/status', 'rollback_versions', [1, 'two'], 'rollback_versions[1]'),
        ('trainer/checkpoint_request', 'chunks', [0, 'one'], 'chunks[1]'),
        ('sim/status', 'last_episode', {'episode': 2}, 'last_episode.task'),
        ('sim/status', 'last_episode', {'task': 'x', 'success': 'yes'}, 'last_episode.success'),
    ]
    return cases


@pytest.mark.parametrize('topic, name, value, path', _bad_cases())
def test_each_bad_field_is_refused_with_its_name_and_value(topic, name, value, path):
    data = EXAMPLES[topic].to_dict()
    data[name] = value
    with pytest.raises(PayloadError) as error:
        payloads.decode(topic, json.dumps(data))
    message = str(error.value)
    assert message.startswith(f'{topic}: ')
    assert repr(path) in message
    assert error.value.field == path
    if path == name:
        assert error.value.value == value
        assert repr(value)[:40] in message


def test_null_only_where_the_type_allows_it():
    data = EXAMPLES['operator/next_task'].to_dict()
    data['request_id'] = None
    assert payloads.decode_next_task(json.dumps(data)).request_id is None
    data['strategy'] = None
    with pytest.raises(PayloadError, match="'strategy' must be a string, not null"):
        payloads.decode_next_task(json.dumps(data))


def test_constructing_an_invalid_payload_raises_so_nothing_invalid_is_encoded():
    with pytest.raises(PayloadError, match="mux/status: field 'source' must be one of"):
        payloads.MuxStatus(source='joystick')
    with pytest.raises(PayloadError, match="'version' must be an integer"):
        payloads.CheckpointAnnounced(version='2', sha256=SHA)
    with pytest.raises(TypeError):
        payloads.encode({'source': 'policy'})


def test_numbers_are_normalised_and_non_finite_scores_survive():
    status = payloads.TrainerStatus(state='waiting', progress=1)
    assert isinstance(status.progress, float)
    text = payloads.encode(payloads.NextTask(task='a', scores={'a': float('nan'),
                                                               'b': float('inf')}))
    scores = payloads.decode_next_task(text).scores
    assert math.isnan(scores['a']) and scores['b'] == math.inf


@pytest.mark.parametrize('text, fragment', [
    ('{not json', 'operator/next_task: not JSON'),
    ('[1, 2]', 'expected a JSON object, got list'),
    ('"reach"', 'expected a JSON object, got str'),
    (None, 'operator/next_task: not JSON'),
    (json.dumps({'task': 'a', 'schema_version': 2}), "'schema_version' is 2, newer than"),
    (json.dumps({'task': 'a', 'schema_version': '1'}), "'schema_version' must be a positive"),
])
def test_whole_message_errors(text, fragment):
    with pytest.raises(PayloadError, match=fragment):
        payloads.decode_next_task(text)


def test_older_and_newer_publishers():
    # Without schema_version (publishers before the field) and with keys this reader lacks.
    old = payloads.decode_next_task(json.dumps({'task': 'push-v3', 'request_id': 7,
                                                'done': False, 'future_field': [1]}))
    assert (old.task, old.request_id, old.demos_per_round) == ('push-v3', 7, None)
    assert 'future_field' not in old.to_dict()


def test_unknown_kind():
    with pytest.raises(KeyError, match='no payload'):
        payloads.decode('camera/image_raw', '{}')


def test_json_schema_describes_required_fields_defaults_and_constraints():
    schema = payloads.json_schema('recorder/episode')
    assert schema['required'] == ['path', 'sha256', 'task', 'success']
    assert schema['properties']['sha256']['pattern'] == '^[0-9a-fA-F]{64}$'
    assert schema['properties']['request_id'] == {
        'type': ['integer', 'null'], 'description': schema['properties']['request_id'][
            'description'], 'default': None}
    status = payloads.json_schema('policy/status')
    assert status['properties']['state']['enum'] == list(payloads.POLICY_STATES)
    assert status['properties']['refused']['anyOf'][0]['properties']['number']['minimum'] == 0


def test_interfaces_doc_shows_the_generated_schemas():
    doc = (Path(__file__).resolve().parents[2] / 'docs' / 'interfaces.md').read_text()
    generated = payloads.schemas_markdown()
    assert generated in doc, ('docs/interfaces.md is out of date: run '
                              'python -m active_finetune.payloads --write docs/interfaces.md')
    assert payloads.replace_schemas(doc) == doc
    for block in generated.split('```json\n')[1:]:
        schema = json.loads(block.split('```')[0])
        assert schema['title'].split(' ')[0] in payloads.PAYLOADS


def test_replace_schemas_appends_then_replaces():
    once = payloads.replace_schemas('# Title\n')
    assert once.startswith('# Title\n\n' + payloads.SCHEMAS_BEGIN)
    stale = once.replace('"maximum": 1', '"maximum": 0')
    assert payloads.replace_schemas(stale) == once


def test_cli_writes_the_section(tmp_path, capsys):
    doc = tmp_path / 'doc.md'
    doc.write_text('# Doc\n\nbefore\n')
    payloads.main(['--write', str(doc)])
    assert payloads.schemas_markdown() in doc.read_text()
    payloads.main([])
    assert capsys.readouterr().out == payloads.schemas_markdown() + '\n'
