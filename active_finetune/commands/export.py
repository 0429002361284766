"""
Export recorded episodes to the dataset formats imitation-learning code trains on.

``af-export`` reads episodes (bag directories, their MCAP files, older single-file episodes, or
whole dataset directories through their index) at full resolution with the rows
:func:`~active_finetune.data.mcap_episode.load_episode` gives (frame t, state at or before it,
the operator's command after it) and writes:

robomimic HDF5 (``--robomimic out.hdf5``), the layout of robomimic's dataset documentation::

    data                      attrs: total (rows), env_args (JSON), tasks, joint_names (JSON)
    data/demo_<i>             attrs: num_samples, task, success, source, sha256
        actions               (N, 4) float32: linear velocity x, y, z / max speed, gripper; [-1, 1]
        rewards               (N,) float32: 1 at the last row of a successful demo, else 0
        dones                 (N,) int64: 1 at the last row
        obs/agentview_image   (N, H, W, 3) uint8, the recorded camera frames (RGB)
        obs/robot0_eef_pos    (N, 3) float64: end-effector position (m, robot base frame)
        obs/robot0_gripper_opening  (N, 1) float64: gripper opening, 0 closed .. 1 open
        obs/robot0_joint_pos  (N, J) float64: joint_states positions (names in data attrs)
        next_obs/...          the same keys one row later (the last row repeats itself)
    mask/<task>, mask/successful   demo names (robomimic filter keys, train.hdf5_filter_key)

robomimic has no environment for these demos: train with ``experiment.rollout.enabled=False``.

diffusion_policy zarr replay buffer (``--zarr out.zarr``, written with zarr 2 as
diffusion_policy reads it: ``ReplayBuffer.copy_from_path``)::

    data/img         (N, H, W, 3) uint8
    data/state       (N, 4) float32: end-effector x, y, z and gripper opening (the policy's input)
    data/joint_pos   (N, J) float32
    data/action      (N, 4) float32
    data/task_id     (N,) int64, index into the root attribute task_names
    meta/episode_ends  (E,) int64: one past each episode's last row

Joints are matched by name to those of the first episode (NaN where an episode lacks one).
"""

import argparse
import json
from pathlib import Path
import shutil

from active_finetune.commands.common import setup_cli
from active_finetune.data.episode_index import list_saved_episodes
from active_finetune.data.mcap_episode import BAG_METADATA_FILE, EpisodeFileError, load_episode
import h5py
import numcodecs
import numpy as np
from rich.progress import Progress
import zarr

ROBOMIMIC_IMAGE_KEY = 'agentview_image'
"""robomimic observation key of the camera frames (its convention for a third-person camera)."""

CHUNK_BYTES = 4 << 20
"""Target size of an image chunk in both formats."""


def resolve_sources(sources, successful_only=False):
    """
    Turn dataset directories and episode paths into a list of episodes to export.

    A bag directory (with ``metadata.yaml`` or ``<its name>.mcap``) or a file is one episode;
    another directory is a dataset directory and gives the saved episodes of its index, in save
    order (read only: episodes the index lacks are logged, not indexed).

    :param sources: paths
    :param successful_only: keep only episodes whose index entry says success (a path given
        directly is checked when it is loaded)
    :return: list of dicts with 'path' and 'sha256' (None when not indexed)
    :raises FileNotFoundError: for a path that does not exist
    """
    episodes = []
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f'no such episode or dataset directory: {source}')
        is_bag = (source / BAG_METADATA_FILE).is_file() \
            or (source / f'{source.name}.mcap').is_file()
        listed = list_saved_episodes(source, reindex=False) \
            if source.is_dir() and not is_bag else []
        if listed:
            episodes += [{'path': entry['path'], 'sha256': entry.get('sha256')}
                         for entry in listed
                         if entry.get('success') or not successful_only]
        else:
            episodes.append({'path': str(source), 'sha256': None})
    return episodes


def _chunk_rows(shape, itemsize=1):
    frame_bytes = int(np.prod(shape[1:])) * itemsize
    return max(1, CHUNK_BYTES // max(1, frame_bytes))


def _joint_matrix(episode, joint_names):
    """Joint positions of an episode in the order of ``joint_names`` (NaN where absent)."""
    columns = {name: i for i, name in enumerate(episode.metadata['joint_names'])}
    matrix = np.full((len(episode), len(joint_names)), np.nan)
    for j, name in enumerate(joint_names):
        if name in columns:
            matrix[:, j] = episode.joint_positions[:, columns[name]]
    return matrix


class RobomimicWriter:
    """
    Write episodes one by one into a robomimic HDF5 file.

    :param path: output file (replaced)
    :param compression: h5py compression of the image datasets ('gzip', 'lzf' or None)
    """

    def __init__(self, path, compression='gzip'):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, 'w')
        self._data = self._file.create_group('data')
        self._compression = compression
        self.total = 0
        self.demos = []
        self.tasks = []
        self.masks = {'successful': []}
        self.joint_names = None
        self.settings = {}

    def add(self, episode, source, sha256=None):
        """
        Append one episode as ``data/demo_<i>``.

        :param episode: :class:`~active_finetune.data.episode.Episode` with joint positions
        :param source: where it came from (stored as an attribute)
        :param sha256: its MCAP file's hash (stored when known)
        :return: the demo's name
        """
        if self.joint_names is None:
            self.joint_names = list(episode.metadata['joint_names'])
        name = f'demo_{len(self.demos)}'
        demo = self._data.create_group(name)
        n = len(episode)
        obs = {
            ROBOMIMIC_IMAGE_KEY: episode.images,
            'robot0_eef_pos': episode.proprio[:, :3].astype(np.float64),
            'robot0_gripper_opening': episode.proprio[:, 3:4].astype(np.float64),
            'robot0_joint_pos': _joint_matrix(episode, self.joint_names),
        }
        following = np.minimum(np.arange(n) + 1, n - 1)
        for group_name, rows in (('obs', slice(None)), ('next_obs', following)):
            group = demo.create_group(group_name)
            for key, values in obs.items():
                values = values[rows]
                if key == ROBOMIMIC_IMAGE_KEY:
                    group.create_dataset(key, data=values, compression=self._compression,
                                         chunks=(min(n, _chunk_rows(values.shape)),)
                                         + values.shape[1:])
                else:
                    group.create_dataset(key, data=values)
        demo.create_dataset('actions', data=episode.actions.astype(np.float32))
        rewards = np.zeros(n, dtype=np.float32)
        rewards[-1] = 1.0 if episode.success else 0.0
        dones = np.zeros(n, dtype=np.int64)
        dones[-1] = 1
        demo.create_dataset('rewards', data=rewards)
        demo.create_dataset('dones', data=dones)
        demo.attrs['num_samples'] = n
        demo.attrs['task'] = episode.task
        demo.attrs['success'] = bool(episode.success)
        demo.attrs['source'] = str(source)
        if sha256:
            demo.attrs['sha256'] = sha256
        self.demos.append(name)
        self.total += n
        if episode.task not in self.tasks:
            self.tasks.append(episode.task)
        self.masks.setdefault(episode.task, []).append(name)
        if episode.success:
            self.masks['successful'].append(name)
        for key in ('max_linear_velocity_mps', 'gripper_joint_name', 'gripper_open_position'):
            self.settings.setdefault(key, episode.metadata.get(key))
        return name

    def close(self):
        """Write the dataset attributes and filter keys, and close the file."""
        self._data.attrs['total'] = self.total
        self._data.attrs['env_args'] = json.dumps({
            'env_name': 'active_finetune', 'type': 2,
            'env_kwargs': {'tasks': self.tasks, 'action': 'linear velocity x, y, z / '
                           'max_linear_velocity_mps and gripper (-1 open, +1 closed)',
                           **self.settings}})
        self._data.attrs['tasks'] = json.dumps(self.tasks)
        self._data.attrs['joint_names'] = json.dumps(self.joint_names or [])
        mask = self._file.create_group('mask')
        for key, names in self.masks.items():
            mask.create_dataset(key, data=np.array(names, dtype='S'))
        self._file.close()


class ReplayBufferWriter:
    """
    Write episodes one by one into a diffusion_policy zarr replay buffer (zarr format 2).

    :param path: output directory (replaced)
    """

    def __init__(self, path):
        self.path = Path(path)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._root = zarr.open_group(str(self.path), mode='w')
        self._data = self._root.require_group('data')
        self._meta = self._root.require_group('meta')
        self._arrays = {}
        self._ends = self._meta.zeros('episode_ends', shape=(0,), chunks=(1024,),
                                      dtype='int64')
        self.rows = 0
        self.task_names = []
        self.joint_names = None

    def _append(self, key, values):
        array = self._arrays.get(key)
        if array is None:
            image = key == 'img'
            compressor = numcodecs.Blosc(cname='lz4', clevel=5,
                                         shuffle=numcodecs.Blosc.NOSHUFFLE) if image \
                else numcodecs.Blosc(cname='lz4', clevel=5)
            rows = _chunk_rows(values.shape, values.dtype.itemsize) if image else 1024
            array = self._data.zeros(key, shape=(0,) + values.shape[1:],
                                     chunks=(rows,) + values.shape[1:], dtype=values.dtype,
                                     compressor=compressor)
            self._arrays[key] = array
        array.append(values, axis=0)

    def add(self, episode):
        """
        Append one episode's rows and its end.

        :param episode: :class:`~active_finetune.data.episode.Episode` with joint positions
        """
        if self.joint_names is None:
            self.joint_names = list(episode.metadata['joint_names'])
        if episode.task not in self.task_names:
            self.task_names.append(episode.task)
        self._append('img', episode.images)
        self._append('state', episode.proprio.astype(np.float32))
        self._append('joint_pos', _joint_matrix(episode, self.joint_names).astype(np.float32))
        self._append('action', episode.actions.astype(np.float32))
        self._append('task_id', np.full(len(episode), self.task_names.index(episode.task),
                                        dtype=np.int64))
        self.rows += len(episode)
        self._ends.append(np.array([self.rows], dtype=np.int64))

    def close(self):
        """Write the root attributes."""
        self._root.attrs.update({'task_names': self.task_names,
                                 'joint_names': self.joint_names or [],
                                 'state_keys': ['eef_x', 'eef_y', 'eef_z', 'gripper_opening']})


def export(sources, robomimic_path=None, zarr_path=None, successful_only=False,
           image_compression='gzip', progress=False):
    """
    Export episodes to robomimic HDF5 and/or a diffusion_policy zarr replay buffer.

    :param sources: dataset directories and/or episode paths
    :param robomimic_path: HDF5 file to write, or None
    :param zarr_path: zarr directory to write, or None
    :param successful_only: leave out failed episodes
    :param image_compression: h5py compression of the robomimic images
    :param progress: show a progress bar
    :return: dict with 'episodes', 'rows', 'skipped' ([{path, reason}]), 'tasks'
    :raises ValueError: when no output is asked for or no episode could be exported
    """
    if not robomimic_path and not zarr_path:
        raise ValueError('nothing to write: give a robomimic and/or a zarr output')
    candidates = resolve_sources(sources, successful_only)
    robomimic = RobomimicWriter(robomimic_path, image_compression) if robomimic_path else None
    replay = ReplayBufferWriter(zarr_path) if zarr_path else None
    writers = [w for w in (robomimic, replay) if w is not None]
    exported, rows, skipped, tasks = 0, 0, [], []
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task('exporting', total=len(candidates))
        for candidate in candidates:
            try:
                episode = load_episode(candidate['path'], image_size=None, joint_states=True)
            except EpisodeFileError as exc:
                skipped.append({'path': candidate['path'], 'reason': exc.reason})
                bar.advance(job)
                continue
            if successful_only and not episode.success:
                skipped.append({'path': candidate['path'], 'reason': 'not successful'})
            else:
                if robomimic is not None:
                    robomimic.add(episode, candidate['path'], candidate['sha256'])
                if replay is not None:
                    replay.add(episode)
                exported += 1
                rows += len(episode)
                if episode.task not in tasks:
                    tasks.append(episode.task)
            bar.advance(job)
    for writer in writers:
        writer.close()
    if not exported:
        raise ValueError(f'no episode could be exported from {list(map(str, sources))} '
                         f'(skipped: {skipped})')
    return {'episodes': exported, 'rows': rows, 'skipped': skipped, 'tasks': tasks}


def main(argv=None):
    """Command-line entry point: ``af-export``."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('sources', nargs='+',
                        help='dataset directories and/or episodes (bag directories, .mcap files)')
    parser.add_argument('--robomimic', help='robomimic HDF5 file to write')
    parser.add_argument('--zarr', help='diffusion_policy zarr replay buffer to write')
    parser.add_argument('--successful-only', action='store_true',
                        help='leave out episodes not marked successful')
    parser.add_argument('--image-compression', default='gzip', choices=['gzip', 'lzf', 'none'],
                        help='HDF5 compression of the robomimic images')
    args = parser.parse_args(argv)
    if not args.robomimic and not args.zarr:
        parser.error('give --robomimic and/or --zarr')
    setup_cli()
    result = export(args.sources, args.robomimic, args.zarr, args.successful_only,
                    None if args.image_compression == 'none' else args.image_compression,
                    progress=True)
    for item in result['skipped']:
        print(f"skipped {item['path']}: {item['reason']}")
    outputs = ' and '.join(p for p in (args.robomimic, args.zarr) if p)
    print(f"exported {result['episodes']} episodes ({result['rows']} rows; tasks "
          f"{', '.join(result['tasks'])}) to {outputs}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
