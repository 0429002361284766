"""af-pretrain hands its training options to the trainer and writes a loadable checkpoint."""

import json

from active_finetune.commands import pretrain as pretrain_module
from active_finetune.policy.checkpoint import load_checkpoint
from active_finetune.policy.model import PolicyConfig, TaskPolicy


def test_command_line_options_reach_the_train_config(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_pretrain(mix, tasks, observation, image_size, train_config, seed, workers,
                      noise_std=0.0, log_dir=None, camera='workspace', encoder='conv', **kwargs):
        seen.update(mix=mix, config=train_config, camera=camera, noise_std=noise_std,
                    encoder=encoder)
        policy = TaskPolicy(PolicyConfig(tasks=tasks, observation=observation,
                                         image_size=image_size))
        return policy, {'bc_loss': 0.5}, {'kind': 'pretrain', 'collect_s': 1.0, 'train_s': 2.0}

    monkeypatch.setattr(pretrain_module, 'pretrain', fake_pretrain)
    out = tmp_path / 'ckpt'
    assert pretrain_module.main([
        '--mix', 'reach-v3=3,push-v3=2', '--tasks', 'reach-v3,push-v3', '--steps', '7',
        '--state-aux', '0.5', '--shift', '0', '--loss', 'nll', '--noise-std', '0.1',
        '--encoder', 'conv', '--workers', '1', '--out', str(out)]) == 0
    config = seen['config']
    assert (config.steps, config.state_aux_weight, config.image_shift_px, config.loss) == \
        (7, 0.5, 0, 'nll')
    assert config.forgetting_control == 'none'
    assert seen['mix'] == {'reach-v3': 3, 'push-v3': 2} and seen['noise_std'] == 0.1
    assert seen['encoder'] == 'conv'
    printed = json.loads(capsys.readouterr().out)
    assert printed['checkpoint'] == str(out)
    policy, meta = load_checkpoint(out)
    assert policy.config.tasks == ('reach-v3', 'push-v3')
    assert '--state-aux 0.5' in meta['provenance']['command']


def test_the_default_loss_is_the_one_the_trainer_node_fine_tunes_with(tmp_path, monkeypatch):
    seen = {}

    def fake_pretrain(mix, tasks, observation, image_size, train_config, *args, **kwargs):
        seen['config'] = train_config
        seen['encoder'] = kwargs.get('encoder')
        return (TaskPolicy(PolicyConfig(tasks=tasks, observation=observation)), {},
                {'collect_s': 0.0, 'train_s': 0.0})

    monkeypatch.setattr(pretrain_module, 'pretrain', fake_pretrain)
    pretrain_module.main(['--mix', 'reach-v3=1', '--tasks', 'reach-v3', '--observation', 'state',
                          '--out', str(tmp_path / 'c')])
    assert seen['config'].loss == 'mse' and seen['config'].state_aux_weight == 0.0
    assert seen['encoder'] == 'efficientnet_lite0'


def test_a_pretrained_encoder_gets_its_imagenet_weights(monkeypatch):
    loaded = []
    monkeypatch.setattr(pretrain_module, 'collect_demos', lambda *a, **k: [])
    monkeypatch.setattr(pretrain_module, 'load_pretrained_trunk', loaded.append)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(pretrain_module, 'DemoDataset', stop)
    for encoder in ('conv', 'efficientnet_lite0'):
        try:
            pretrain_module.pretrain({'reach-v3': 1}, ('reach-v3',), 'image', 32,
                                     pretrain_module.TrainConfig(steps=1), 0, 1,
                                     progress=False, encoder=encoder)
        except Stop:
            pass
    assert [p.config.encoder for p in loaded] == ['efficientnet_lite0']
