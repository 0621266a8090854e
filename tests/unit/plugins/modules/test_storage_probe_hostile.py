# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""storage_probe and storage_probe_peer against hostile input: every bad number, path, name or check list
refused by main() before anything is touched, the work directory made safely and never left behind,
leftovers read without trusting them, and the cross-host messages of another host checked before use,
without hanging. Hosts are forked processes on tmp_path talking over 127.0.0.1; a faked host with the run's
key posts what it likes. The real filesystems: tests/integration/test_storage_probe_*.py."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import socket
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import (
    crosshost, crosshost_protocol as protocol, identity, inputs, probe, procs, workdir as workdirs)
from ansible_collections.cyrus.ha.plugins.modules import storage_probe, storage_probe_peer
from hostile import deadline, run_main  # shared by the hostile tests

HOST = socket.gethostname()


def probe_main(capsys, **args):
    args.setdefault('checks', ['identity'])
    return run_main(storage_probe, args, capsys)[0]


def refused_by_probe(capsys, tmp_path, **args) -> str:
    before = sorted(os.listdir(tmp_path))
    out = probe_main(capsys, **args)
    assert out['failed'] is True and 'exception' not in out, out
    assert sorted(os.listdir(tmp_path)) == before
    return out['msg']


def peer_main(capsys, tmp_path, **args):
    base = {'path': str(tmp_path), 'peers': ['a'], 'me': 'a', 'run_id': 'hostile01', 'checks': ['excl_race'],
            'timeout': 10, 'step_timeout': 1}
    return run_main(storage_probe_peer, dict(base, **args), capsys)[0]


def refused_by_peer(capsys, tmp_path, **args) -> str:
    before = sorted(os.listdir(tmp_path))
    out = peer_main(capsys, tmp_path, **args)
    assert out['failed'] is True and 'exception' not in out, out
    assert sorted(os.listdir(tmp_path)) == before
    return out['msg']


# -- numbers: not finite, negative, zero, huge, or not numbers at all ------------------------------

@pytest.mark.parametrize('args, message', [
    ({'timeout': 'nan'}, 'timeout must be between 1 and 86400, got nan'),
    ({'timeout': 'inf'}, 'timeout must be between 1 and 86400, got inf'),
    ({'timeout': -5}, 'timeout must be between 1 and 86400, got -5.0'),
    ({'stat_timeout': 0}, 'stat_timeout must be between 0.1 and 3600, got 0.0'),
    ({'stat_timeout': '-inf'}, 'stat_timeout must be between 0.1 and 3600, got -inf'),
    ({'fsx_ops': 0}, 'fsx_ops must be between 1 and 10000000, got 0'),
    ({'fsx_ops': 10 ** 12}, 'fsx_ops must be between 1 and 10000000, got 1000000000000'),
    ({'fsx_seed': -1}, 'fsx_seed must be between 0 and 4294967295, got -1'),
    ({'scale_files': 10 ** 10}, 'scale_files must be between 8 and 10000000, got 10000000000'),
    ({'scale_rounds': True}, 'scale_rounds must be a number between 1 and 12, got True'),
    ({'scale_rounds': 0}, 'scale_rounds must be between 1 and 12, got 0'),
])
def test_probe_numbers_are_refused_before_the_path_is_touched(tmp_path, capsys, args, message):
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)], **args) == message


def test_non_ascii_digits_are_the_number_they_write(tmp_path, capsys):
    """Ansible reads '١٢٠' as 120 before the module sees it: the same number as '120', not a bad one."""
    out = probe_main(capsys, path=[str(tmp_path)], timeout='\u0661\u0662\u0660')
    assert out['ansible_facts']['storage_probe'][str(tmp_path)]['verdict'] == 'safe' and os.listdir(tmp_path) == []


@pytest.mark.parametrize('args, message', [
    ({'timeout': 'nan'}, 'timeout must be between 5 and 86400, got nan'),
    ({'step_timeout': 'inf'}, 'step_timeout must be between 0.5 and 3600, got inf'),
    ({'recovery_timeout': -1}, 'recovery_timeout must be between 0.5 and 3600, got -1.0'),
    ({'neighbour_files': True}, 'neighbour_files must be a number between 1 and 1000000, got True'),
    ({'neighbour_files': 0}, 'neighbour_files must be between 1 and 1000000, got 0'),
    ({'pingpong_iterations': 10 ** 12}, 'pingpong_iterations must be between 100 and 10000000, got 1000000000000'),
])
def test_peer_numbers_are_refused(tmp_path, capsys, args, message):
    assert refused_by_peer(capsys, tmp_path, **args) == message


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -1.0, True, '5'])
def test_no_wait_reaches_select_or_alarm_unless_finite(value):
    with pytest.raises(ValueError) as caught:
        procs.seconds(value)
    assert str(caught.value) == 'timeout must be a finite number of seconds, got %r' % (value,)
    with pytest.raises(ValueError):
        procs.Child(pow, 2, 2, deadline=value)


def test_the_time_a_run_takes_to_clean_up_grows_with_what_it_made():
    opts = dict(probe.DEFAULTS)
    assert probe.cleanup_timeout(opts) == 10.0 + 3840 / 1000.0
    assert probe.cleanup_timeout(dict(opts, scale_files=10 ** 7, scale_rounds=1)) == 10.0 + 10 ** 4
    peer = dict(crosshost.DEFAULTS, neighbour_files=10 ** 6)
    assert crosshost.cleanup_timeout(peer) == 10.0 + 1000.0
    # a step per try and four more, the recovery, three looks per try, the ring, the tree read twice
    assert crosshost._check_limit(peer) == 90.0 + 10.0 + 30.0 + 20.0 + 4000.0


# -- paths -------------------------------------------------------------------------------------------

def test_empty_relative_dotdot_and_nul_paths_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'rel').mkdir()
    (tmp_path / 'a').mkdir()
    assert refused_by_probe(capsys, tmp_path, path=['']) == 'path is empty: give the absolute path of a directory'
    assert refused_by_probe(capsys, tmp_path, path=['rel']) == (
        "path 'rel' is relative: give an absolute path (a relative one would be taken from the working directory "
        "of the module on the host)")
    dotdot = '%s/a/..' % tmp_path
    assert refused_by_probe(capsys, tmp_path, path=[dotdot]) == \
        "path '%s' has a '..' component: give the directory itself" % dotdot
    assert refused_by_probe(capsys, tmp_path, path=['%s/x\0y' % tmp_path]) == \
        "path '%s/x\\x00y' contains a NUL byte" % tmp_path
    assert refused_by_peer(capsys, tmp_path, path='rel') == (
        "path 'rel' is relative: give an absolute path (a relative one would be taken from the working directory "
        "of the module on the host)")
    assert refused_by_peer(capsys, tmp_path, path=dotdot) == \
        "path '%s' has a '..' component: give the directory itself" % dotdot
    assert refused_by_peer(capsys, tmp_path, path='%s/x\0y' % tmp_path) == \
        "path '%s/x\\x00y' contains a NUL byte" % tmp_path
    assert sorted(os.listdir(tmp_path)) == ['a', 'rel'] and os.listdir(tmp_path / 'rel') == []


def _socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()


@pytest.mark.parametrize('make', [
    os.mkfifo, _socket, lambda p: os.symlink('/dev/null', p), lambda p: open(p, 'w', encoding='ascii').close(),
])
def test_special_files_are_not_directories_and_do_not_block(tmp_path, capsys, make):
    target = str(tmp_path / 'odd')
    make(target)
    message = '%s is not a directory: give the directory that will hold the mail store' % target
    assert refused_by_probe(capsys, tmp_path, path=[target]) == message
    assert refused_by_peer(capsys, tmp_path, path=target, peers=['a', 'b']) == \
        '%s is not a directory: give the shared directory that will hold the mail store' % target


def test_a_symlinked_path_is_probed_where_it_leads_and_identified_there(tmp_path, capsys, monkeypatch):
    real = tmp_path / 'real'
    real.mkdir()
    (tmp_path / 'link').symlink_to(real)
    mountinfo = identity.read_mountinfo() + '999 1 0:99 / %s rw - tmpfs probe-real rw\n' % real
    monkeypatch.setattr(identity, 'read_mountinfo', lambda: mountinfo)
    out = probe_main(capsys, path=[str(tmp_path / 'link') + '/'])
    report = out['ansible_facts']['storage_probe'][str(tmp_path / 'link')]
    assert report['real_path'] == str(real) and report['workdir'].startswith(str(real) + '/.cyrus-ha-probe-')
    assert report['identity']['mount_point'] == str(real) and report['identity']['source'] == 'probe-real'
    assert os.listdir(real) == [] and sorted(os.listdir(tmp_path)) == ['link', 'real']


def test_dangling_and_looping_symlinks_are_named_as_such(tmp_path, capsys):
    (tmp_path / 'dangling').symlink_to(tmp_path / 'gone')
    (tmp_path / 'loop').symlink_to(tmp_path / 'loop')
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path / 'dangling')]) == \
        '%s is a symlink to %s, which does not exist' % (tmp_path / 'dangling', tmp_path / 'gone')
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path / 'loop')]) == \
        '%s cannot be examined: Too many levels of symbolic links' % (tmp_path / 'loop')


def test_a_directory_named_twice_is_refused_in_any_spelling(tmp_path, capsys):
    (tmp_path / 'link').symlink_to(tmp_path)
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path), str(tmp_path) + '//.']) == \
        "path names %s twice (%r and %r): name each directory once" % (tmp_path, str(tmp_path), str(tmp_path) + '//.')
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path), str(tmp_path / 'link')]) == \
        '%s and %s are the same directory %s: name each directory once' % (tmp_path, tmp_path / 'link', tmp_path)


def test_a_directory_not_writable_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, 'access', lambda *args, **kwargs: False)   # root may write anywhere: fake it
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)]) == \
        '%s is not writable by uid %d: run the probe as a user that may create files there' % (tmp_path, os.geteuid())


def test_a_non_ascii_path_is_probed_and_left_clean(tmp_path, capsys):
    part = tmp_path / 'p\u00e4rt\u0661'
    part.mkdir()
    out = probe_main(capsys, path=[str(part)])
    assert out['ansible_facts']['storage_probe'][str(part)]['verdict'] == 'safe' and os.listdir(part) == []


def test_every_path_is_checked_before_the_first_is_cleaned(tmp_path, capsys):
    stale = tmp_path / '.cyrus-ha-probe-old'
    stale.mkdir()
    (stale / 'owner.json').write_text(json.dumps({'host': HOST, 'pid': 2 ** 22 + 7, 'start': 1}))
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path), str(tmp_path / 'missing')],
                            clean_leftovers=True) == '%s does not exist' % (tmp_path / 'missing')
    assert stale.exists()


# -- check lists -------------------------------------------------------------------------------------

def test_empty_and_doubled_check_lists_are_refused(tmp_path, capsys):
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)], checks=[]) == \
        'checks is empty: name the checks to run, or all'
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)], checks=['identity', 'fsx', 'identity']) == \
        'checks names identity twice: name each check once'
    assert refused_by_peer(capsys, tmp_path, checks=[]) == 'checks is empty: name the checks to run, or all'
    assert refused_by_peer(capsys, tmp_path, checks=['excl_race', 'excl_race']) == \
        'checks names excl_race twice: name each check once'


@pytest.mark.parametrize('name', ['bogus', '', 'f\u0455ync', 'fsync\0'])
def test_unknown_check_names_are_refused_by_the_spec(tmp_path, capsys, name):
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)], checks=[name]).startswith(
        'value of checks must be one or more of: all, identity, mmap_sees_write')


def test_unknown_check_names_are_refused_by_the_library_too(tmp_path):
    with pytest.raises(probe.ProbeError) as caught:
        probe.probe_path(str(tmp_path), ['bogus'])
    assert str(caught.value) == ("checks: 'bogus' is not a check (known: all, identity, mmap_sees_write, "
                                 "mmap_write_msync, fcntl_locks, flock, rename_reopen, hard_links, excl_race, fsync, "
                                 "fsx, metadata_scale, metadata_deep)")
    with pytest.raises(ValueError) as caught:
        crosshost.run(str(tmp_path), 'hostile01', 'a', ['a', 'b'], [])
    assert str(caught.value) == 'checks is empty: name the checks to run, or all'
    assert os.listdir(tmp_path) == []


# -- the work directory: made safely, mode 0700, always removed ------------------------------------

def test_a_planted_symlink_under_the_chosen_name_is_never_followed(tmp_path, capsys, monkeypatch):
    target = tmp_path / 'target'
    target.mkdir()
    (tmp_path / '.cyrus-ha-probe-planted').symlink_to(target)
    names = iter(['.cyrus-ha-probe-planted', '.cyrus-ha-probe-fresh'])
    monkeypatch.setattr(workdirs, 'new_name', lambda: next(names))
    out = probe_main(capsys, path=[str(tmp_path)])
    report = out['ansible_facts']['storage_probe'][str(tmp_path)]
    assert report['workdir'] == str(tmp_path / '.cyrus-ha-probe-fresh') and report['workdir_cleanup'] == 'removed'
    assert os.listdir(target) == [] and sorted(os.listdir(tmp_path)) == ['.cyrus-ha-probe-planted', 'target']
    assert report['leftovers'] == []     # a symlink named like a work directory is not one


def test_names_all_taken_fail_clearly(tmp_path, capsys, monkeypatch):
    (tmp_path / '.cyrus-ha-probe-taken').mkdir()
    monkeypatch.setattr(workdirs, 'new_name', lambda: '.cyrus-ha-probe-taken')
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)]) == \
        '%s: could not create the work directory: 5 unpredictable names were all taken' % tmp_path


def test_the_work_directory_is_0700_whatever_the_umask(tmp_path):
    old = os.umask(0o777)
    try:
        made = workdirs.create(str(tmp_path))
    finally:
        os.umask(old)
    assert os.stat(made).st_mode & 0o7777 == 0o700 and os.listdir(made) == ['owner.json']
    assert len(os.path.basename(made)) == len('.cyrus-ha-probe-') + 16
    workdirs.remove(made)


def test_an_owner_note_that_cannot_be_written_leaves_nothing(tmp_path, capsys, monkeypatch):
    real_open = os.open

    def full(path, *args, **kwargs):
        if path == 'owner.json':
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, 'open', full)
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)]) == \
        '%s: no space left to create the work directory: the filesystem is full' % tmp_path


def test_a_work_directory_whose_creation_hung_is_removed_by_its_name(tmp_path, capsys, monkeypatch):
    real_mkdir = os.mkdir

    def hangs(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if '.cyrus-ha-probe-' in str(path):
            time.sleep(30)
    monkeypatch.setattr(os, 'mkdir', hangs)
    started = time.monotonic()
    assert refused_by_probe(capsys, tmp_path, path=[str(tmp_path)], stat_timeout=1) == \
        '%s: could not create the work directory in time (no answer within 1.0 s): the filesystem hangs' % tmp_path
    assert time.monotonic() - started < 10


# -- leftovers: read without trusting them ----------------------------------------------------------

def _leftover(tmp_path, name, note=None, make=None):
    directory = tmp_path / name
    directory.mkdir()
    if make is not None:
        make(str(directory / 'owner.json'))
    elif note is not None:
        (directory / 'owner.json').write_text(note if isinstance(note, str) else json.dumps(note))
    return directory


def test_a_symlink_claiming_to_be_a_stale_leftover_is_never_cleaned_through(tmp_path, capsys):
    victim = _leftover(tmp_path, 'victim', {'host': HOST, 'pid': 2 ** 22 + 7, 'start': 1})
    (victim / 'precious').write_text('x')
    (tmp_path / '.cyrus-ha-probe-planted').symlink_to(victim)
    out = probe_main(capsys, path=[str(tmp_path)], clean_leftovers=True)
    report = out['ansible_facts']['storage_probe'][str(tmp_path)]
    assert out['changed'] is False and report['leftovers'] == [] and report['leftovers_removed'] == []
    assert sorted(os.listdir(victim)) == ['owner.json', 'precious']


@pytest.mark.parametrize('note, make', [
    (None, os.mkfifo),                                        # would block open() until the stat_timeout
    (None, lambda p: os.symlink('/dev/zero', p)),              # would read forever
    ('[1, 2, 3]', None),                                      # not an object
    ('{"host": "%s", "pid": "self", "start": 1}' % HOST, None),    # /proc/self: never "gone"
    ('{"host": "%s", "pid": true, "start": 1}' % HOST, None),
    ('{"host": "%s", "pid": -1, "start": 1}' % HOST, None),
    ('{"host": "%s", "pid": 7, ' % HOST, None),               # truncated
    ('{"host": "%s", "pid": 7, "pad": "%s"}' % (HOST, 'x' * 5000), None),   # oversized
])
def test_hostile_owner_notes_are_reported_never_trusted_or_waited_on(tmp_path, capsys, note, make):
    planted = _leftover(tmp_path, '.cyrus-ha-probe-planted', note, make)
    with deadline(8):
        out = probe_main(capsys, path=[str(tmp_path)], clean_leftovers=True, stat_timeout=5)
    report = out['ansible_facts']['storage_probe'][str(tmp_path)]
    assert [item['stale'] for item in report['leftovers']] == [False] and report['leftovers'][0]['pid'] is None
    assert report['leftovers_removed'] == [] and planted.exists()


def test_a_stale_leftover_of_this_host_is_still_cleaned(tmp_path, capsys):
    _leftover(tmp_path, '.cyrus-ha-probe-old', {'host': HOST, 'pid': 2 ** 22 + 7, 'start': 1})
    out = probe_main(capsys, path=[str(tmp_path)], clean_leftovers=True)
    assert out['changed'] is True and os.listdir(tmp_path) == []


# -- peer names and run tokens --------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    ({'run_id': 'hostile01\n'}, "run_id 'hostile01\\n' must be 6 to 64 letters, digits, - or _"),
    ({'run_id': '\u0661\u0662\u0663\u0664\u0665\u0666'}, "run_id '\u0661\u0662\u0663\u0664\u0665\u0666' must be 6 to 64 "
                                                         "letters, digits, - or _"),
    ({'run_id': '../../etc'}, "run_id '../../etc' must be 6 to 64 letters, digits, - or _"),
    ({'peers': ['a', 'b/../../c']}, "peers: 'b/../../c' is not a host name (1 to 253 of letters, digits, ., -, _ and :)"),
    ({'peers': ['', 'a'], 'me': ''}, "peers: '' is not a host name (1 to 253 of letters, digits, ., -, _ and :)"),
    ({'peers': ['a\0x', 'a']}, "peers: 'a\\x00x' is not a host name (1 to 253 of letters, digits, ., -, _ and :)"),
    ({'peers': ['b\u00e9', 'a']}, "peers: 'b\u00e9' is not a host name (1 to 253 of letters, digits, ., -, _ and :)"),
    ({'peers': ['be\u0661', 'a']}, "peers: 'be\u0661' is not a host name (1 to 253 of letters, digits, ., -, _ and :)"),
    ({'peers': ['a', 'fe80::1%eth0']}, "peers: 'fe80::1%eth0' is not a host name (1 to 253 of letters, digits, ., -, _ "
                                       "and :)"),
    ({'peers': ['a', 'b'], 'me': 'A'}, 'me (A) is not one of the peers (a, b)'),
    ({'peers': ['a', 'b'], 'me': 'a b'}, "me: 'a b' is not a host name (1 to 253 of letters, digits, ., -, _ and :)"),
    ({'peers': ['a', 'a']}, 'peers name a host twice: a, a'),
    ({'peers': ['10.0.0.1', '::ffff:10.0.0.1'], 'me': '10.0.0.1'},
     'peers name a host twice: 10.0.0.1 and ::ffff:10.0.0.1 are the same address'),
    ({'peers': ['FE80::1', 'fe80::1'], 'me': 'fe80::1'}, 'peers name a host twice: FE80::1 and fe80::1 are the same address'),
    ({'peers': ['2001:db8::1', '2001:DB8:0:0::1'], 'me': '2001:db8::1'},
     'peers name a host twice: 2001:db8::1 and 2001:DB8:0:0::1 are the same address'),
    ({'peers': ['BE1', 'be1.'], 'me': 'BE1'},
     'peers name a host twice: BE1 and be1. are the same host name (host names are not case-sensitive)'),
])
def test_names_are_refused_before_the_run_directory_is_made(tmp_path, capsys, args, message):
    assert refused_by_peer(capsys, tmp_path, **args) == message


def test_a_link_local_address_without_zone_is_only_a_name(tmp_path, capsys, side_channel):
    """The peers are labels of messages, never connected to: fe80::2 is one host among others."""
    out = peer_main(capsys, tmp_path, peers=['fe80::1', 'fe80::2'], me='fe80::1', timeout=6, **side_channel)
    report = out['ansible_facts']['storage_probe_peer'][str(tmp_path)]
    assert report['gone'] == ['fe80::2'] and report['reasons'] == [
        'excl_race: fe80::2 did not answer within 1 s: the host or its probe process is gone']
    assert os.listdir(tmp_path) == []


def test_the_run_token_is_not_a_secret_but_the_channel_key_is(tmp_path, capsys):
    """run_id names the run directory (returned as run_dir): no_log on it would mask that path."""
    assert 'Not a secret' in storage_probe_peer.DOCUMENTATION
    args = {'path': str(tmp_path), 'peers': ['a'], 'me': 'a', 'run_id': 'visible01'}
    out, dummy = run_main(storage_probe_peer, args, capsys)
    assert out['ansible_facts']['storage_probe_peer'][str(tmp_path)]['run_dir'].endswith('xh-visible01')
    out, dummy = run_main(storage_probe_peer, dict(args, peers=['a', 'b'], channel_address='127.0.0.1',
                                                   channel_key='s3cr3t-key-0123456789', timeout=6, step_timeout=1,
                                                   checks=['excl_race']), capsys)
    assert 's3cr3t-key-0123456789' not in json.dumps(out)


@pytest.mark.parametrize('args, message', [
    ({}, "channel_address None must be the address (or name) of the leader that every host reaches it on: letters, "
         "digits, ., -, _ and :"),
    ({'channel_address': '10.0.0.1; rm -rf /', 'channel_key': 'k' * 32},
     "channel_address '10.0.0.1; rm -rf /' must be the address (or name) of the leader that every host reaches it "
     "on: letters, digits, ., -, _ and :"),
    ({'channel_address': '127.0.0.1'}, 'channel_key must be 16 to 256 letters, digits, - or _, the same on every '
                                       'host of the run (a random string made once on the controller)'),
    ({'channel_address': '127.0.0.1', 'channel_key': 'short'}, 'channel_key must be 16 to 256 letters, digits, - or '
     '_, the same on every host of the run (a random string made once on the controller)'),
    ({'channel_address': '127.0.0.1', 'channel_key': 'k' * 32, 'channel_port': 0},
     'channel_port must be between 1 and 65535, got 0'),
    ({'channel_address': '127.0.0.1', 'channel_key': 'k' * 32, 'channel_port': 70000},
     'channel_port must be between 1 and 65535, got 70000'),
    ({'channel_address': '127.0.0.1', 'channel_key': 'k' * 32, 'tries': 0}, 'tries must be between 1 and 100, got 0'),
    ({'channel_address': '127.0.0.1', 'channel_key': 'k' * 32, 'visibility_timeout': 'inf'},
     'visibility_timeout must be between 0.1 and 600, got inf'),
])
def test_a_side_channel_without_an_address_port_or_key_is_refused(tmp_path, capsys, args, message):
    assert refused_by_peer(capsys, tmp_path, peers=['a', 'b'], **args) == message


def test_a_channel_address_not_of_the_leader_is_named(tmp_path, capsys, side_channel):
    out = peer_main(capsys, tmp_path, peers=['a', 'b'], **dict(side_channel, channel_address='198.51.100.254'))
    assert out['ansible_facts']['storage_probe_peer'][str(tmp_path)]['error'] == (
        'could not listen on 198.51.100.254 port %d for the other hosts (EADDRNOTAVAIL): it is not an address of this '
        'host (channel_address must be the leader\'s own)' % side_channel['channel_port'])
    assert os.listdir(tmp_path) == []


def test_a_planted_run_directory_symlink_is_refused_and_not_written_through(tmp_path, side_channel):
    target = tmp_path / 'target'
    target.mkdir()
    rundir = tmp_path / '.cyrus-ha-probe-xh-hostile01'
    rundir.symlink_to(target)
    started = time.monotonic()
    out = run_hosts(tmp_path, side_channel, {'a': (['a', 'b'], ['excl_race']), 'b': (['a', 'b'], ['excl_race'])})
    why = 'could not create the run directory %s: EEXIST (a run_id used twice?)' % rundir
    assert out['a']['error'] == why and out['b']['error'] == 'the leader a could not start the run: %s' % why
    assert time.monotonic() - started < 5 and os.listdir(target) == [] and os.path.islink(rundir)


# -- messages of the wrong shape, from hosts that hold the run's key ---------------------------------

def _host(queue, path, run_id, me, peers, checks, opts):
    queue.put((me, crosshost.run(path, run_id, me, peers, checks, opts)))


def run_hosts(tmp_path, channel, plan, fake=None):
    """plan: {me: (peers, checks)} of real hosts; fake(rundir, channel) plays the others by hand."""
    opts = dict({'step_timeout': 1.0, 'pingpong_iterations': 400, 'neighbour_files': 32, 'recovery_timeout': 1.0,
                 'timeout': 30.0, 'tries': 1}, **channel)
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    hosts = [ctx.Process(target=_host, args=(queue, str(tmp_path), 'hostile01', me, peers, checks, opts))
             for me, (peers, checks) in plan.items()]
    for proc in hosts:
        proc.start()
    if fake is not None:
        fake(protocol.rundir_of(str(tmp_path), 'hostile01'), channel)
    out = dict(queue.get(timeout=60) for dummy in hosts)
    for proc in hosts:
        proc.join(30)
    return out


def _talk(channel):
    return protocol.TcpChannel('127.0.0.1', channel['channel_port'], channel['channel_key'], 'hostile01')


def fake_leader(checks, posts, meet=None):
    """A leader with the run's key that posts what it likes (NaN and Infinity are refused by encode: sent raw)."""
    def play(rundir, channel):
        sock = protocol.listen('127.0.0.1', channel['channel_port'])
        broker = procs.Child(protocol.serve, sock, channel['channel_key'], 'hostile01', deadline=60)
        sock.close()
        talk = _talk(channel)
        try:
            protocol.create_rundir(rundir)
            talk.post('meet', 'a', meet or {'peers': ['a', 'b'], 'checks': checks, 'problem': ''})
            if meet is None:
                run = protocol.Run(rundir, 'a', ['a', 'b'], 5.0, talk)
                run.wait('ready', 'b')
                talk.post('go', 'a', {'why': ''})
            for step, data in posts:
                talk.post(step, 'a', data(rundir) if callable(data) else data)
            protocol.Run(rundir, 'a', ['a', 'b'], 30.0, talk).gather('end')
        finally:
            shutil.rmtree(rundir, ignore_errors=True)
            broker.kill()
    return play


def fake_peer(posts):
    def play(rundir, channel):
        run = protocol.Run(rundir, 'b', ['a', 'b'], 10.0, _talk(channel))
        run.wait('meet', 'a')
        run.post('ready', {'seen': 0.0})
        run.wait('go', 'a')
        for step, data in posts:
            run.post(step, data)
    return play


def test_a_message_that_is_not_json_makes_its_host_gone_with_the_reason(tmp_path, side_channel):
    """A host with the key that sends NaN: the broker refuses the request, the step is never there."""
    def play(rundir, channel):
        fake_leader(['excl_race'], [])(rundir, channel)

    def nan_peer(rundir, channel):
        talk = _talk(channel)
        protocol.Run(rundir, 'b', ['a', 'b'], 10.0, talk).wait('meet', 'a')
        talk.post('ready', 'b', {'seen': 0.0})
        line = ('{"op": "post", "step": "excl-done", "host": "b", "data": {"won": NaN}, "mac": "%s"}\n' % protocol.sign(
            channel['channel_key'], 'hostile01', 'post', 'excl-done', 'b', None)).encode()
        with socket.create_connection(('127.0.0.1', channel['channel_port']), timeout=5) as sock:
            sock.sendall(line)
            answer = sock.recv(4096)
        assert json.loads(answer) == {'error': 'refused: it is not a JSON message (truncated, or not sent by the probe)'}
        talk.post('end', 'b', None)
    out = run_hosts(tmp_path, side_channel, {'a': (['a', 'b'], ['excl_race'])}, nan_peer)
    assert out['a']['checks']['excl_race']['reason'] == 'b did not answer within 1 s: the host or its probe process ' \
                                                        'is gone'


@pytest.mark.parametrize('at', [float('inf'), 'soon', None])
def test_a_start_time_that_is_not_a_time_fails_the_race_naming_the_leader(tmp_path, side_channel, at):
    if isinstance(at, float):  # a leader may not send it: encode refuses Infinity, so would the broker
        with pytest.raises(ValueError):
            protocol.encode({'at': at})
        return
    out = run_hosts(tmp_path, side_channel, {'b': (['a', 'b'], ['excl_race'])},
                    fake_leader(['excl_race'], [('excl-go', {'at': at})]))
    check = out['b']['checks']['excl_race']
    assert check['status'] == 'fail' and out['b']['gone'] == []  # it answered, wrongly: not gone
    assert check['reason'] == 'the leader a sent a malformed message for step excl-go: at is not a finite number of ' \
                              'seconds'
    assert sorted(os.listdir(tmp_path)) == []


def test_a_start_time_far_ahead_is_not_waited_for(tmp_path, side_channel):
    started = time.monotonic()
    out = run_hosts(tmp_path, side_channel, {'b': (['a', 'b'], ['excl_race'])},
                    fake_leader(['excl_race'], [('excl-go', {'at': time.time() + 10 ** 6})]))
    assert out['b']['checks']['excl_race']['status'] == 'pass' and time.monotonic() - started < 8


def test_a_kill_time_that_is_not_a_time_fails_the_recovery_naming_the_leader(tmp_path, side_channel):
    def made(rundir):
        with open(os.path.join(rundir, 'recover'), 'wb') as handle:
            handle.write(bytes(4096))
        return {'pid': 1}
    out = run_hosts(tmp_path, side_channel, {'b': (['a', 'b'], ['lock_recovery'])},
                    fake_leader(['lock_recovery'], [('recover-held', made), ('recover-killed', {'at': 'soon'})]))
    assert out['b']['checks']['lock_recovery']['reason'] == (
        'the leader a sent a malformed message for step recover-killed: at is not a finite number of seconds')


def test_a_peer_result_that_is_not_a_result_names_the_peer(tmp_path, side_channel):
    out = run_hosts(tmp_path, side_channel, {'a': (['a', 'b'], ['lock_exclusion', 'excl_race'])},
                    fake_peer([('lockx-done', [1, 2]), ('excl-done', {'won': 'yes'}), ('end', None)]))
    checks = out['a']['checks']
    assert checks['lock_exclusion']['reason'] == ('b sent a malformed message for step lockx-done: not a check '
                                                  'result (a status of pass, warn, fail, skip and a reason)')
    assert checks['excl_race']['status'] == 'fail' and out['a']['gone'] == ['b']
    assert out['a']['run_dir_cleanup'] == 'removed' and os.listdir(tmp_path) == []


def test_a_host_given_the_peers_in_another_order_says_so_and_the_leader_is_told(tmp_path, side_channel):
    out = run_hosts(tmp_path, side_channel, {'a': (['a', 'b', 'c'], ['lock_exclusion']),
                                             'b': (['a', 'b', 'c'], ['lock_exclusion']),
                                             'c': (['a', 'c', 'b'], ['lock_exclusion'])})
    assert out['c']['error'] == ('the peers here (a, c, b) are not those of the leader a (a, b, c): give every host '
                                 'the same peers in the same order')
    assert out['c']['checks']['lock_exclusion']['status'] == 'fail'
    why = 'c was given other peers (or another order) than the leader: give every host the same peers in the same order'
    assert out['a']['checks']['lock_exclusion']['reason'] == why and out['a']['gone'] == []
    assert out['b']['error'] == 'the leader a stopped the run: %s' % why
    assert os.listdir(tmp_path) == []


def test_a_host_given_other_checks_says_so_and_the_leader_is_told(tmp_path, side_channel):
    started = time.monotonic()
    out = run_hosts(tmp_path, side_channel, {'a': (['a', 'b'], ['lock_exclusion']), 'b': (['a', 'b'], ['excl_race'])})
    assert out['b']['error'] == ('the checks here (excl_race) are not those of the leader a (lock_exclusion): give '
                                 'every host the same checks')
    assert out['a']['checks']['lock_exclusion']['reason'] == 'b was given other checks than the leader: give every ' \
                                                             'host the same checks' and out['a']['gone'] == []
    assert time.monotonic() - started < 8 and os.listdir(tmp_path) == []


def test_a_meet_that_is_not_the_leaders_is_refused_without_echoing_it(tmp_path, side_channel):
    out = run_hosts(tmp_path, side_channel, {'b': (['a', 'b'], ['excl_race'])},
                    fake_leader(['excl_race'], [], meet={'peers': ['a', '<script>'], 'checks': ['rm -rf'],
                                                         'problem': ''}))
    assert out['b']['error'] == ('the leader a sent a malformed message for step meet: not the peers and checks of '
                                 'a run')
    assert '<script>' not in json.dumps(out) and 'rm -rf' not in json.dumps(out)
    assert out['b']['run_dir_cleanup'] == 'not mine' and os.listdir(tmp_path) == []


def test_the_peer_names_are_checked_by_the_library_too():
    with pytest.raises(inputs.InputError) as caught:
        crosshost.check_names('hostile01', '::ffff:10.0.0.1', ['10.0.0.1', '::ffff:10.0.0.1'])
    assert str(caught.value) == 'peers name a host twice: 10.0.0.1 and ::ffff:10.0.0.1 are the same address'
