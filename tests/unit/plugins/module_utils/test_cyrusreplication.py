# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrusreplication: role, peer and sync_client of an instance from its config pair and a recorded /proc,
the sync log backlog in a temporary configdirectory, and mbexamine output (recorded from Cyrus 3.6.1,
hostile, and once from the real tool when the throwaway master at /tmp/rx/a exists)."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusreplication
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusreplication import (
    FIELDS, ReplicationError, backlog, describe, gather, mailbox_states, parse_channels, parse_mbexamine,
    peer_address, short_options, switch_value)
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import ReplicationDataError

NOW = 1_800_000_000.0
NOW_TEXT = cyrusreplication.utc_text(NOW)

# mbexamine -C ... -u 4294967295 '*' of one mailbox, verbatim (Cyrus 3.6.1, Debian 12); shared with the module's test
ALICE = (pathlib.Path(__file__).parent / 'fixtures' / 'cyrus' / 'debian12' / 'mbexamine-alice.txt').read_text(encoding='utf-8')
ALICE_STATE = {'uniqueid': 'tqbkjob05xvk3u2rj297w2n0', 'uidvalidity': 1796290794, 'uidnext': 3,
               'highestmodseq': 3, 'messages': 2}


def block(name, uniqueid, uidvalidity=1796291199, last_uid=0, messages=0, modseq=1, drop=()):
    """One mailbox as mbexamine prints it; ``drop`` leaves out the lines starting with those words."""
    lines = [f'Examining {name}... Mailbox Header Info:',
             f'  Path to mailbox: /srv/spool/uuid/{uniqueid[:1]}/{uniqueid[1:2]}/{uniqueid}',
             '  Mailbox ACL: bob\tlrswipkxtecdan\t',
             f'  Unique ID: {uniqueid}',
             '  User Flags: [none]',
             '',
             ' Index Header Info:',
             '  Generation Number: 0',
             '  Minor Version: 17',
             '  Header Size: 160 bytes  Record Size: 112 bytes',
             f'  Number of Messages: {messages}  Mailbox Size: 0 bytes  Annotations Size: 0 bytes',
             '  Last Append Date: (0) Thu Jan  1 00:00:00 1970',
             f'  UIDValidity: {uidvalidity}  Last UID: {last_uid}',
             '  Deleted: 0  Answered: 0  Flagged: 0',
             '  Mailbox Options: POP3_NEW_UIDL',
             '  Last POP3 Login: (0) Thu Jan  1 00:00:00 1970',
             f'  Highest Mod Sequence: {modseq}',
             '',
             ' Message Info:',
             'Desired message not found']
    return '\n'.join(line for line in lines if not any(line.strip().startswith(d) for d in drop)) + '\n'


# ---------------------------------------------------------------------------------------------
# mbexamine output
# ---------------------------------------------------------------------------------------------

def test_the_verbatim_block_of_cyrus_3_6_1():
    assert parse_mbexamine(ALICE) == {'mailboxes': {'user.alice': ALICE_STATE}, 'problems': [], 'complete': True}


def test_names_with_spaces_modified_utf7_and_dots_are_kept_whole():
    names = ['user.alice.2nd level with spaces', 'user.alice.caf&AOk-', 'user/bob/wait... what', 'shared.x.y']
    text = ''.join(block(name, f'{index}ouniqueid{index}xxxxxxxxxxxxx', last_uid=index, messages=index,
                         modseq=10 + index) for index, name in enumerate(names))
    found = parse_mbexamine(text)
    assert found['problems'] == [] and found['complete'] is True
    assert list(found['mailboxes']) == names
    assert found['mailboxes']['user/bob/wait... what'] == {
        'uniqueid': '2ouniqueid2xxxxxxxxxxxxx', 'uidvalidity': 1796291199, 'uidnext': 3, 'highestmodseq': 12,
        'messages': 2}


@pytest.mark.parametrize('drop, unknown', [
    (('Highest Mod Sequence',), ['highestmodseq']),
    (('Unique ID',), ['uniqueid']),
    (('UIDValidity',), ['uidvalidity', 'uidnext']),       # one line holds both
    (('Number of Messages',), ['messages']),
])
def test_a_block_missing_a_field_keeps_its_mailbox_with_a_problem(drop, unknown):
    text = ALICE + block('user.bob', 'a2s3qgde9cfyeazmw3etp9ba', drop=drop) + block('user.carol', 'c' * 24)
    found = parse_mbexamine(text)
    bob = found['mailboxes']['user.bob']
    known = {'uniqueid': 'a2s3qgde9cfyeazmw3etp9ba', 'uidvalidity': 1796291199, 'uidnext': 1, 'highestmodseq': 1,
             'messages': 0}
    problem = 'no %s in its mbexamine output' % ', '.join(unknown)
    assert bob == dict(known, **dict.fromkeys(unknown), problem=problem)
    assert found['problems'] == ['mailbox user.bob: ' + problem]
    assert found['mailboxes']['user.alice'] == ALICE_STATE
    assert 'problem' not in found['mailboxes']['user.carol']
    assert found['complete'] is True


def test_a_field_given_twice_with_different_values_is_a_problem():
    twice = '  Highest Mod Sequence: 1\n  Highest Mod Sequence: 9\n'
    text = block('user.bob', 'b' * 24).replace('  Highest Mod Sequence: 1\n', twice)
    bob = parse_mbexamine(text)['mailboxes']['user.bob']
    assert bob['highestmodseq'] is None
    assert bob['problem'] == 'no highestmodseq in its mbexamine output; highestmodseq given twice with ' \
                             'different values (1, 9)'


def test_the_listing_stopped_at_a_mailbox_mbexamine_could_not_open():
    # recorded: cyrus.header of user.bob.empty overwritten; mbexamine stops there and exits 0
    text = block('user.alice', 'a' * 24) + 'Examining user.bob.empty...'
    found = parse_mbexamine(text)
    assert found['mailboxes']['user.bob.empty'] == dict(dict.fromkeys(FIELDS),
                                                        problem='mbexamine could not open it (see the syslog '
                                                                'of mbexamine)')
    assert found['problems'] == [
        'mailbox user.bob.empty: mbexamine could not open it (see the syslog of mbexamine)',
        'mbexamine stopped at mailbox user.bob.empty: the mailboxes after it in its listing were not examined']
    assert found['complete'] is False
    assert found['mailboxes']['user.alice']['uniqueid'] == 'a' * 24


def test_a_mailbox_that_could_not_be_opened_in_the_middle_of_the_listing():
    text = block('user.bob', 'b' * 24).replace('Examining user.bob', 'Examining user.a b...Examining user.bob')
    found = parse_mbexamine(text)
    assert list(found['mailboxes']) == ['user.a b', 'user.bob']
    assert found['mailboxes']['user.a b']['problem'] == 'mbexamine could not open it (see the syslog of mbexamine)'
    assert found['mailboxes']['user.bob']['uniqueid'] == 'b' * 24
    assert found['complete'] is True


@pytest.mark.parametrize('text, problem', [
    ('Segmentation fault\n', "mbexamine output line 1 is before any mailbox: 'Segmentation fault'"),
    ('\x00\xff garbage ' * 20, "mbexamine output line 1 is before any mailbox: '\\x00\xff garbage "),
    ('Examining nothing at all\n', "mbexamine output line 1 is before any mailbox: 'Examining nothing at all'"),
])
def test_garbage_output_is_a_problem_not_a_mailbox(text, problem):
    found = parse_mbexamine(text)
    assert found['mailboxes'] == {} and found['complete'] is False
    assert len(found['problems']) == 1 and found['problems'][0].startswith(problem)


def test_garbage_inside_a_block_leaves_the_mailbox_unknown():
    found = parse_mbexamine('Examining user.x... Mailbox Header Info:\n\x00\x01binary junk\n')
    assert found['mailboxes'] == {'user.x': dict(dict.fromkeys(FIELDS), problem='no uniqueid, uidvalidity, '
                                                 'uidnext, highestmodseq, messages in its mbexamine output')}
    assert found['complete'] is True and len(found['problems']) == 1


def test_empty_output_is_a_server_without_mailboxes():
    assert parse_mbexamine('') == {'mailboxes': {}, 'problems': [], 'complete': True}
    assert parse_mbexamine(None) == {'mailboxes': {}, 'problems': [], 'complete': True}


def test_a_mailbox_listed_twice_is_unknown():
    found = parse_mbexamine(ALICE + ALICE)
    assert found['mailboxes']['user.alice'] == dict(dict.fromkeys(FIELDS), problem='listed twice by mbexamine')


def fake_bindir(tmp_path):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (bindir / 'mbexamine').write_text('#!/bin/false\n')
    return str(bindir)


def test_mailbox_states_runs_mbexamine_for_every_header_and_no_message(tmp_path):
    bindir = fake_bindir(tmp_path)
    ran = []
    found = mailbox_states('/etc/cyrus-ha/be1/imapd.conf', bindir, lambda argv: ran.append(argv) or (0, ALICE, ''))
    assert ran == [[f'{bindir}/mbexamine', '-C', '/etc/cyrus-ha/be1/imapd.conf', '-u', '4294967295', '*']]
    assert found == {'mailboxes': {'user.alice': ALICE_STATE}, 'problems': [], 'complete': True}


def test_mailbox_states_failure_carries_the_tools_stderr(tmp_path):
    bindir = fake_bindir(tmp_path)
    with pytest.raises(ReplicationError) as caught:
        mailbox_states('/nonexistent.conf', bindir, lambda argv: (
            78, '', "fatal error: can't open configuration file /nonexistent.conf: No such file or directory"))
    assert caught.value.msg == (f"{bindir}/mbexamine -C /nonexistent.conf failed (exit status 78): fatal error: "
                                "can't open configuration file /nonexistent.conf: No such file or directory")


@pytest.mark.parametrize('bindir', [None, '/nonexistent/bin'])
def test_mailbox_states_without_cyrus_says_what_to_install(bindir):
    with pytest.raises(ReplicationError) as caught:
        mailbox_states('/etc/cyrus-ha/be1/imapd.conf', bindir, lambda argv: pytest.fail('ran %r' % argv))
    assert caught.value.msg == ('mbexamine not found in %s: install Cyrus (Debian: cyrus-common) on this node'
                                % (bindir or 'any Cyrus bin directory'))


# ---------------------------------------------------------------------------------------------
# pieces of the configuration
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('value, expected', [
    ('1', True), ('yes', True), ('on', True), ('true', True), ('t', True),
    ('0', False), ('no', False), ('off', False), ('false', False),
    ('Yes', None), ('ON', None), ('2', None), ('o', None), ('', None), (None, None),
])
def test_switch_value_as_libconfig_reads_it(value, expected):
    assert switch_value(value) is expected


@pytest.mark.parametrize('host, port, expected', [
    ('replica.example.org', None, 'replica.example.org'),
    ('replica.example.org', '2005', 'replica.example.org:2005'),
    ('2001:db8::5', '2005', '[2001:db8::5]:2005'),
    (None, '2005', None),
])
def test_peer_address(host, port, expected):
    assert peer_address(host, port) == expected


@pytest.mark.parametrize('value, expected', [
    (None, ['']),
    ('squatter', ['squatter']),
    ('"" squatter  backup', ['', 'squatter', 'backup']),
    ('backup backup', ['backup']),
    ('   ', ['']),
])
def test_parse_channels(value, expected):
    assert parse_channels(value) == expected


@pytest.mark.parametrize('argv, expected', [
    (['sync_client', '-C', '/c', '-r'], {'C': '/c', 'r': True}),
    (['sync_client', '-vr', '-C/c'], {'v': True, 'r': True, 'C': '/c'}),
    (['sync_client', '-n', 'backup', '-r'], {'n': 'backup', 'r': True}),
    (['sync_client', '-nr'], {'n': 'r'}),                       # "r" is the channel here
    (['sync_client', '-C', '/c', 'user.r', '-r'], {'C': '/c'}),  # an operand ends the options
    (['sync_client', '-f', '-r'], {'f': '-r'}),
])
def test_short_options_as_getopt_reads_them(argv, expected):
    assert short_options(argv) == expected


# ---------------------------------------------------------------------------------------------
# describe(): a config pair under tmp_path
# ---------------------------------------------------------------------------------------------

def instance(root, name, imapd, cyrus='START {\n}\n'):
    directory = root / name
    directory.mkdir(parents=True)
    (directory / 'imapd.conf').write_text(imapd)
    (directory / 'cyrus.conf').write_text(cyrus)
    return str(directory / 'imapd.conf')


def master_conf(configdirectory, extra=''):
    return (f'configdirectory: {configdirectory}\npartition-default: /srv/spool\nsync_log: 1\n'
            f'sync_host: be1-replica.example.org\nsync_port: 2005\nsync_authname: repl\n'
            f'sync_password: s3cret-Pw\nsync_repeat_interval: 1\n{extra}')


MASTER_CYRUS = ('SERVICES {\n  imap cmd="imapd -C /etc/cyrus-ha/be1/imapd.conf" listen="198.51.100.9:143"\n}\n'
                'DAEMON {\n  syncclient cmd="/usr/lib/cyrus/bin/sync_client -C /etc/cyrus-ha/be1/imapd.conf -r"\n}\n')
REPLICA_CYRUS = ('SERVICES {\n  imap cmd="imapd -C /etc/cyrus-ha/be1/imapd.conf" listen="198.51.100.19:143"\n'
                 '  syncserver cmd="/usr/lib/cyrus/bin/sync_server -C /etc/cyrus-ha/be1/imapd.conf" '
                 'listen="198.51.100.19:2005"\n}\n')


def test_a_master_with_its_peer_client_and_no_secret(tmp_path, proc):
    conf = instance(tmp_path / 'etc', 'be1', master_conf(tmp_path / 'lib'), MASTER_CYRUS)
    proc.add(100, ['/usr/lib/cyrus/bin/sync_client', '-C', conf, '-r'])
    proc.add(101, ['/usr/lib/cyrus/bin/sync_client', '-C', conf, '-o', '-u', 'alice'])    # one-shot: not rolling
    proc.add(102, ['/usr/lib/cyrus/bin/sync_client', '-C', '/etc/cyrus-ha/be2/imapd.conf', '-r'])
    proc.add(103, ['/usr/lib/cyrus/bin/sync_client', '-C', conf, '-r'], state='Z')
    proc.add(104, ['/usr/lib/cyrus/bin/sync_client', '-C', conf, '-r'], netns='net:[9]')  # the spare's copy
    proc.add(105, ['/usr/lib/cyrus/bin/imapd', '-C', conf, '-r'])
    found = describe('be1', str(tmp_path / 'etc'), proc.root, NOW)
    assert found == {
        'instance': 'be1', 'imapd_conf': conf, 'cyrus_conf': str(tmp_path / 'etc' / 'be1' / 'cyrus.conf'),
        'configdirectory': str(tmp_path / 'lib'), 'role': 'master', 'chained': False, 'sync_log': True,
        'sync_log_chain': False, 'peer': 'be1-replica.example.org:2005', 'channel_peers': {}, 'authname': 'repl',
        'channels': [''], 'repeat_interval': '1',
        'sync_client': {'configured': True, 'entries': ['syncclient'], 'running': True, 'pids': [100]},
        'sync_server': {'configured': False, 'entries': []},
        'backlog': {'bytes': 0, 'entries': 0, 'files': [], 'leftovers': [], 'oldest_age': 0, 'complete': True,
                    'problems': []},
        # nothing is pending: the replica holds every change logged until now
        'last_sync': {'at': NOW_TEXT, 'through': NOW_TEXT, 'age': 0.0, 'source': 'backlog', 'record': None,
                      'problem': None, 'at_epoch': NOW, 'through_epoch': NOW},
        'problems': []}
    assert 's3cret-Pw' not in json.dumps(found)


def test_a_replica_and_a_chained_one(tmp_path, proc):
    instance(tmp_path, 'be1r', 'configdirectory: /var/lib/cyrus-ha/be1r\n', REPLICA_CYRUS)
    replica = describe('be1r', str(tmp_path), proc.root, NOW)
    assert (replica['role'], replica['chained'], replica['peer'], replica['authname']) == ('replica', False, None, None)
    assert replica['sync_server'] == {'configured': True, 'entries': ['syncserver']}
    assert replica['sync_client'] == {'configured': False, 'entries': [], 'running': False, 'pids': []}
    instance(tmp_path, 'be1c', master_conf('/var/lib/cyrus-ha/be1c', 'sync_log_chain: yes\n'), REPLICA_CYRUS)
    chained = describe('be1c', str(tmp_path), proc.root, NOW)
    assert (chained['role'], chained['chained'], chained['sync_log_chain']) == ('master', True, True)


def test_sync_log_without_sync_host_is_no_master(tmp_path, proc):
    instance(tmp_path, 'be1', 'configdirectory: /var/lib/cyrus-ha/be1\nsync_log: yes\n')
    found = describe('be1', str(tmp_path), proc.root, NOW)
    assert (found['role'], found['sync_log'], found['peer'], found['channel_peers']) == ('none', True, None, {})


def test_a_channel_with_its_own_host_makes_a_master(tmp_path, proc):
    instance(tmp_path, 'be1', 'configdirectory: /var/lib/cyrus-ha/be1\nsync_log: on\n'
                              'sync_log_channels: squatter backup\nbackup_sync_host: bk.example.org\n'
                              'backup_sync_port: 2006\n')
    found = describe('be1', str(tmp_path), proc.root, NOW)
    assert (found['role'], found['peer'], found['channels']) == ('master', None, ['squatter', 'backup'])
    assert found['channel_peers'] == {'backup': 'bk.example.org:2006'}


def test_a_switch_cyrus_refuses_is_a_problem(tmp_path, proc):
    conf = instance(tmp_path, 'be1', 'configdirectory: /var/lib/cyrus-ha/be1\nsync_log: Yes\nsync_host: r.example.org\n')
    found = describe('be1', str(tmp_path), proc.root, NOW)
    assert (found['role'], found['sync_log']) == ('none', False)
    assert found['problems'] == [f"{conf}:2: sync_log: 'Yes' is not a switch (Cyrus refuses it; use 1/yes/on/true "
                                 "or 0/no/off/false)"]


def test_syntax_errors_of_the_pair_are_problems_not_failures(tmp_path, proc):
    instance(tmp_path, 'be1', master_conf('/var/lib/x', 'no colon here\n'), 'DAEMON {\n  sync cmd="sync_client -r"\n')
    found = describe('be1', str(tmp_path), proc.root, NOW)
    assert found['role'] == 'master' and found['sync_client']['configured'] is True
    assert [p.split(': ', 1)[1] for p in found['problems']] == [
        'invalid option name: expected "key: value"', 'section DAEMON is not closed with "}"']


@pytest.mark.parametrize('name', ['../etc', 'Be1', '', 'a' * 40, 'be 1', None])
def test_an_invalid_instance_name_is_refused_before_any_file_is_read(tmp_path, name):
    with pytest.raises(ReplicationError) as caught:
        describe(name, str(tmp_path))
    assert caught.value.msg == 'instance %r: not a valid instance name (a lower-case letter, then up to 30 of ' \
                               'a-z 0-9 _ -)' % (name,)


@pytest.mark.parametrize('present', [(), ('imapd.conf',)])
def test_a_missing_config_file_names_the_instance_and_the_path(tmp_path, present):
    (tmp_path / 'be1').mkdir()
    for file in present:
        (tmp_path / 'be1' / file).write_text('configdirectory: /x\n')
    missing = tmp_path / 'be1' / ('cyrus.conf' if present else 'imapd.conf')
    with pytest.raises(ReplicationError) as caught:
        describe('be1', str(tmp_path))
    assert caught.value.msg == (f"instance be1: {missing} does not exist: is be1 the instance's name, and "
                                f"{tmp_path} its config root?")


def test_a_config_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / 'be1' / 'imapd.conf').mkdir(parents=True)
    with pytest.raises(ReplicationError) as caught:
        describe('be1', str(tmp_path))
    assert caught.value.msg == f'instance be1: {tmp_path}/be1/imapd.conf is a directory, not a regular file: refused'


# ---------------------------------------------------------------------------------------------
# the sync log backlog
# ---------------------------------------------------------------------------------------------

def log(path, text, age):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (NOW - age, NOW - age))
    return str(path)


def test_backlog_of_the_default_and_a_named_channel_with_a_leftover(tmp_path, proc):
    lib = tmp_path / 'lib'
    texts = {'log': 'APPEND user.alice\nMAILBOX user.alice\n\nUSER bob\n', 'log-run': 'MAILBOX "user.alice.2nd level"\n',
             'log-1234': 'USER carol\nUSER dave\n', 'chan2': 'APPEND user.x'}     # the last line still being written
    sizes = {key: len(text) for key, text in texts.items()}
    assert sizes == {'log': 47, 'log-run': 31, 'log-1234': 21, 'chan2': 13}
    main = log(lib / 'sync' / 'log', texts['log'], 5)
    run = log(lib / 'sync' / 'log-run', texts['log-run'], 60)
    left = log(lib / 'sync' / 'log-1234', texts['log-1234'], 86400)
    chan = log(lib / 'sync' / 'chan2' / 'log', texts['chan2'], 1)
    log(lib / 'sync' / 'notalog', 'USER x\n', 1)
    (lib / 'sync' / 'log-dir').mkdir()
    instance(tmp_path / 'etc', 'be1', master_conf(lib, 'sync_log_channels: "" chan2\n'), MASTER_CYRUS)
    found = describe('be1', str(tmp_path / 'etc'), proc.root, NOW)['backlog']
    assert found == {
        'bytes': 47 + 31 + 21 + 13, 'entries': 3 + 1 + 2 + 1,
        'files': [{'channel': '', 'file': main, 'bytes': 47, 'entries': 3, 'age': 5},
                  {'channel': '', 'file': left, 'bytes': 21, 'entries': 2, 'age': 86400},
                  {'channel': '', 'file': run, 'bytes': 31, 'entries': 1, 'age': 60},
                  {'channel': 'chan2', 'file': chan, 'bytes': 13, 'entries': 1, 'age': 1}],
        'leftovers': [left], 'oldest_age': 86400, 'complete': True, 'problems': []}


def test_a_channel_dropped_from_the_config_still_counts(tmp_path):
    old = log(tmp_path / 'sync' / 'old' / 'log-run', 'USER a\n', 30)
    found = backlog(str(tmp_path), [''], NOW)
    assert found['files'] == [{'channel': 'old', 'file': old, 'bytes': 7, 'entries': 1, 'age': 30}]


def test_no_sync_directory_is_no_backlog(tmp_path):
    assert backlog(str(tmp_path / 'lib'), ['', 'chan2'], NOW) == {
        'bytes': 0, 'entries': 0, 'files': [], 'leftovers': [], 'oldest_age': 0, 'complete': True, 'problems': []}


def test_an_unreadable_sync_directory_makes_the_backlog_incomplete(tmp_path):
    (tmp_path / 'sync').write_text('not a directory\n')
    found = backlog(str(tmp_path), ['', 'chan2'], NOW)
    assert (found['complete'], found['bytes'], found['files']) == (False, 0, [])
    assert found['problems'] == [f'{tmp_path}/sync: cannot be read: Not a directory',
                                 f'{tmp_path}/sync/chan2: cannot be read: Not a directory']


def test_an_unreadable_directory_from_permissions(tmp_path, monkeypatch):
    real = os.scandir

    def scandir(path):
        if str(path).endswith('chan2'):
            raise PermissionError(13, 'Permission denied')
        return real(path)
    monkeypatch.setattr(cyrusreplication.os, 'scandir', scandir)
    (tmp_path / 'sync' / 'chan2').mkdir(parents=True)
    main = log(tmp_path / 'sync' / 'log', 'USER a\n', 2)
    found = backlog(str(tmp_path), ['', 'chan2'], NOW)
    assert [f['file'] for f in found['files']] == [main]
    assert (found['complete'], found['problems']) == (False, [f'{tmp_path}/sync/chan2: cannot be read: '
                                                              'Permission denied'])


def test_a_fifo_or_symlink_named_log_is_not_read(tmp_path):
    (tmp_path / 'sync').mkdir()
    os.mkfifo(tmp_path / 'sync' / 'log-5')
    os.symlink('/etc/passwd', tmp_path / 'sync' / 'log')
    found = backlog(str(tmp_path), [''], NOW)
    assert (found['files'], found['complete']) == ([], False)
    assert sorted(found['problems']) == [f'{tmp_path}/sync/log-5: cannot be read: not a regular file',
                                         f'{tmp_path}/sync/log: cannot be read: Too many levels of symbolic links']


def test_a_log_renamed_while_read_is_read_again(tmp_path, monkeypatch):
    """The rolling sync_client renames log to log-run between our listing and our open."""
    sync = tmp_path / 'sync'
    log(sync / 'log', 'USER a\nUSER b\n', 3)
    real = cyrusreplication._count
    calls = []

    def count(path):
        calls.append(os.path.basename(path))
        if len(calls) == 1:
            os.rename(sync / 'log', sync / 'log-run')
        return real(path)
    monkeypatch.setattr(cyrusreplication, '_count', count)
    found = backlog(str(tmp_path), [''], NOW)
    assert calls == ['log', 'log-run']
    assert found['files'] == [{'channel': '', 'file': str(sync / 'log-run'), 'bytes': 14, 'entries': 2, 'age': 3}]
    assert (found['leftovers'], found['complete']) == ([], True)


def test_a_log_that_never_holds_still_is_reported(tmp_path, monkeypatch):
    log(tmp_path / 'sync' / 'log', 'USER a\n', 3)

    def count(path):
        raise FileNotFoundError(2, 'No such file or directory', path)
    monkeypatch.setattr(cyrusreplication, '_count', count)
    found = backlog(str(tmp_path), [''], NOW)
    assert (found['files'], found['complete']) == ([], False)
    assert found['problems'] == [f'{tmp_path}/sync: its files kept changing while read (5 tries): backlog unknown']


def test_without_configdirectory_the_backlog_is_unknown(tmp_path, proc):
    instance(tmp_path, 'be1', 'sync_log: 1\nsync_host: r.example.org\n', MASTER_CYRUS)
    found = describe('be1', str(tmp_path), proc.root, NOW)['backlog']
    assert (found['complete'], found['problems']) == (False, ['configdirectory is not set: the sync log cannot be found'])


def test_a_channel_name_that_is_a_path_is_not_followed(tmp_path):
    found = backlog(str(tmp_path), ['../../etc'], NOW)
    assert found['problems'] == ["sync_log_channels: '../../etc' is not a channel directory name: skipped"]
    assert found['complete'] is False


def test_ages_are_never_negative(tmp_path):
    log(tmp_path / 'sync' / 'log', 'USER a\n', -50)       # written "in the future" (clock stepped back)
    assert backlog(str(tmp_path), [''], NOW)['files'][0]['age'] == 0


# ---------------------------------------------------------------------------------------------
# gather(): what the module returns
# ---------------------------------------------------------------------------------------------

def test_gather_with_mailboxes(tmp_path, proc):
    conf = instance(tmp_path / 'etc', 'be1', master_conf(tmp_path / 'lib'), MASTER_CYRUS)
    (tmp_path / 'bin').mkdir()
    for tool in ('master', 'mbexamine'):
        (tmp_path / 'bin' / tool).write_text('')
    ran = []
    found = gather('be1', str(tmp_path / 'etc'), True, lambda argv: ran.append(argv) or (0, ALICE, ''),
                   bindirs=(str(tmp_path / 'none'), str(tmp_path / 'bin')), proc_root=proc.root, now=NOW)
    assert ran == [[str(tmp_path / 'bin' / 'mbexamine'), '-C', conf, '-u', '4294967295', '*']]
    assert (found['mailboxes'], found['mailbox_problems'], found['mailboxes_complete']) == (
        {'user.alice': ALICE_STATE}, [], True)
    assert found['role'] == 'master'
    without = gather('be1', str(tmp_path / 'etc'), False, lambda argv: pytest.fail('ran %r' % argv),
                     proc_root=proc.root, now=NOW)
    assert 'mailboxes' not in without and without['peer'] == 'be1-replica.example.org:2005'


class Clock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def replica_bin(tmp_path):
    (tmp_path / 'bin').mkdir()
    for tool in ('master', 'mbexamine'):
        (tmp_path / 'bin' / tool).write_text('')
    return (str(tmp_path / 'bin'),)


def test_wait_to_hold_reads_until_the_replica_holds_the_masters_snapshot(tmp_path, proc):
    instance(tmp_path / 'etc', 'be1', 'configdirectory: %s\n' % (tmp_path / 'lib'),
             'SERVICES {\n  syncserver cmd="sync_server" listen="2005"\n}\n')
    older = ALICE.replace('Last UID: 2', 'Last UID: 1').replace('Highest Mod Sequence: 3', 'Highest Mod Sequence: 2')
    reads = iter([older, older, ALICE])
    clock = Clock()
    found = cyrusreplication.wait_to_hold('be1', {'user.alice': ALICE_STATE}, 10, str(tmp_path / 'etc'),
                                          lambda argv: (0, next(reads), ''), replica_bin(tmp_path), proc.root,
                                          interval=0.2, clock=clock, sleep=clock.sleep)
    assert (found['caught_up'], found['waited'], found['lacking']) == (True, 0.4, [])
    assert found['role'] == 'replica' and found['mailboxes'] == {'user.alice': ALICE_STATE}
    assert clock.slept == [0.2, 0.2]


def test_wait_to_hold_gives_up_at_its_timeout_and_says_what_is_lacking(tmp_path, proc):
    instance(tmp_path / 'etc', 'be1', 'configdirectory: %s\n' % (tmp_path / 'lib'))
    clock = Clock()
    found = cyrusreplication.wait_to_hold('be1', {'user.alice': ALICE_STATE, 'user.bob': ALICE_STATE}, 1,
                                          str(tmp_path / 'etc'), lambda argv: (0, ALICE, ''), replica_bin(tmp_path),
                                          proc.root, interval=0.3, clock=clock, sleep=clock.sleep)
    assert (found['caught_up'], found['waited']) == (False, 1.0)
    assert found['lacking'] == [{'mailbox': 'user.bob', 'reason': 'only on the old master'}]
    assert clock.slept == [0.3, 0.3, 0.3, pytest.approx(0.1)]


def test_wait_to_hold_refuses_a_snapshot_that_is_no_mapping_before_reading(tmp_path):
    with pytest.raises(ReplicationDataError) as caught:
        cyrusreplication.wait_to_hold('be1', ['user.alice'], 1, str(tmp_path), lambda argv: pytest.fail('ran'))
    assert str(caught.value) == ('the master mailboxes must be a mapping of mailbox name to its state (the mailboxes '
                                 'of cyrus.ha.cyrus_replication_facts), not list')


# ---------------------------------------------------------------------------------------------
# last_sync: the backlog on the master, the lag record on the replica
# ---------------------------------------------------------------------------------------------

def lag_record(state_dir, name='be1r', **fields):
    state_dir.mkdir(exist_ok=True)
    record = dict({'instance': name, 'master': 'be1', 'replica': 'spare', 'measured_at': NOW - 100.5,
                   'seen_at': NOW - 100.0, 'seconds': 0.5, 'caught_up': True, 'timeout': 30, 'modseq': 7}, **fields)
    (state_dir / ('replication-lag-%s.json' % name)).write_text(json.dumps(record))
    return str(state_dir / ('replication-lag-%s.json' % name))


def test_a_replica_dates_its_last_sync_by_the_last_marker_it_held(tmp_path, proc):
    instance(tmp_path / 'etc', 'be1r', 'configdirectory: /var/lib/cyrus-ha/be1r\n', REPLICA_CYRUS)
    path = lag_record(tmp_path / 'state')
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert found == {'at': cyrusreplication.utc_text(NOW - 100.0), 'through': cyrusreplication.utc_text(NOW - 100.5),
                     'age': 100.0, 'source': 'marker', 'record': path, 'problem': None, 'at_epoch': NOW - 100.0,
                     'through_epoch': NOW - 100.5}
    # the last measurement did not see the replica catch up: the one before it still dates the last sync
    lag_record(tmp_path / 'state', measured_at=NOW - 10, seen_at=None, seconds=30, caught_up=False,
               last_caught_up={'marked_at': NOW - 400.25, 'seen_at': NOW - 400.0, 'seconds': 0.25})
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert (found['at'], found['through'], found['age'], found['source']) == (
        cyrusreplication.utc_text(NOW - 400.0), cyrusreplication.utc_text(NOW - 400.25), 400.0, 'marker')


def test_without_a_caught_up_measurement_the_last_sync_is_unknown(tmp_path, proc):
    instance(tmp_path / 'etc', 'be1r', 'configdirectory: /var/lib/cyrus-ha/be1r\n', REPLICA_CYRUS)
    unknown = {'at': None, 'through': None, 'age': None, 'source': None, 'at_epoch': None, 'through_epoch': None}
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert found == dict(unknown, record=None, problem=None)      # never measured here
    path = lag_record(tmp_path / 'state', seen_at=None, caught_up=False)
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert found == dict(unknown, record=path, problem=None)


@pytest.mark.parametrize('content, problem', [
    (b'{"instance": "be1r", ', 'not JSON: not a lag record'),
    (b'\xff\xfe', 'not JSON: not a lag record'),
    (b'["be1r"]', 'not a lag record of instance be1r'),
    (b'{"instance": "be2", "caught_up": true, "measured_at": 1, "seen_at": 2}', 'not a lag record of instance be1r'),
    (b' ' * 70000, 'larger than 65536 bytes: not a lag record'),
])
def test_a_bad_lag_record_is_named_and_dates_nothing(tmp_path, proc, content, problem):
    instance(tmp_path / 'etc', 'be1r', 'configdirectory: /var/lib/cyrus-ha/be1r\n', REPLICA_CYRUS)
    (tmp_path / 'state').mkdir()
    path = tmp_path / 'state' / 'replication-lag-be1r.json'
    path.write_bytes(content)
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert found == {'at': None, 'through': None, 'age': None, 'source': None, 'record': str(path),
                     'problem': '%s: %s' % (path, problem), 'at_epoch': None, 'through_epoch': None}


@pytest.mark.parametrize('fields', [
    {'seen_at': True}, {'measured_at': 'yesterday'}, {'seen_at': -5}, {'caught_up': 'yes'},
])
def test_a_lag_record_without_usable_times_dates_nothing(tmp_path, proc, fields):
    instance(tmp_path / 'etc', 'be1r', 'configdirectory: /var/lib/cyrus-ha/be1r\n', REPLICA_CYRUS)
    path = lag_record(tmp_path / 'state', **fields)
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert (found['at'], found['source'], found['record'], found['problem']) == (None, None, path, None)


def test_a_master_with_a_backlog_is_not_in_sync_now(tmp_path, proc):
    conf_dir = tmp_path / 'lib'
    conf = instance(tmp_path / 'etc', 'be1', master_conf(conf_dir), MASTER_CYRUS)
    (conf_dir / 'sync').mkdir(parents=True)
    (conf_dir / 'sync' / 'log').write_text('')       # an empty log holds nothing, but no client runs
    found = describe('be1', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert (found['at'], found['source']) == (None, None)
    proc.add(100, ['/usr/lib/cyrus/bin/sync_client', '-C', conf, '-r'])
    (conf_dir / 'sync' / 'log').write_text('APPEND user.alice\n')
    found = describe('be1', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert (found['at'], found['source']) == (None, None)
    (conf_dir / 'sync' / 'log').write_text('')       # shipped by the running client
    found = describe('be1', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert (found['at'], found['age'], found['source']) == (NOW_TEXT, 0.0, 'backlog')


def test_a_chained_node_is_dated_by_its_own_lag_record(tmp_path, proc):
    conf = instance(tmp_path / 'etc', 'be1r', master_conf('/nonexistent/be1r', 'sync_log_chain: yes\n'), REPLICA_CYRUS)
    proc.add(100, ['/usr/lib/cyrus/bin/sync_client', '-C', conf, '-r'])
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert found['source'] is None                       # its empty onward backlog says nothing of its own sync
    path = lag_record(tmp_path / 'state')
    found = describe('be1r', str(tmp_path / 'etc'), proc.root, NOW, str(tmp_path / 'state'))['last_sync']
    assert (found['source'], found['record'], found['at_epoch']) == ('marker', path, NOW - 100.0)
