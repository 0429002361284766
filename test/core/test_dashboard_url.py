"""The dashboard URL the main job prints, from the graph's parameters, arguments, overrides."""

from active_finetune.dashboard.config import graph_dashboard_url
from active_finetune.graph import load_graph
import pytest

TOKEN = 'a-token-of-24-characters'


def test_the_sim_graph_serves_the_page_on_loopback_port_8080_by_default():
    assert graph_dashboard_url(load_graph('sim')) == 'http://127.0.0.1:8080/'


def test_arguments_and_overrides_move_the_url_and_a_token_joins_it():
    graph = load_graph('sim', arguments={'dashboard_port': '9123'})
    assert graph_dashboard_url(graph) == 'http://127.0.0.1:9123/'
    graph = load_graph('sim', overrides={'dashboard.host': '192.168.10.7',
                                         'dashboard.port': 8000, 'dashboard.token': TOKEN})
    assert graph_dashboard_url(graph) == f'http://192.168.10.7:8000/?token={TOKEN}'
    graph = load_graph('sim', arguments={'dashboard_host': '0.0.0.0', 'dashboard_token': TOKEN})
    assert graph_dashboard_url(graph) == f'http://127.0.0.1:8080/?token={TOKEN}'


def test_no_url_without_a_dashboard_node_or_with_any_free_port():
    graph = load_graph('sim', arguments={'dashboard': 'false'})
    assert 'dashboard' not in [node.name for node in graph.nodes]
    assert graph_dashboard_url(graph) is None
    assert graph_dashboard_url(load_graph('sim', overrides={'dashboard.port': 0})) is None


def test_a_lan_host_without_a_token_is_refused_as_the_node_would():
    graph = load_graph('sim', overrides={'dashboard.host': '192.168.10.7'})
    with pytest.raises(ValueError, match='token'):
        graph_dashboard_url(graph)
