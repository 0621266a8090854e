# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collection quality gates: ansible-test sanity, ansible-doc on every plugin, the galaxy build,
ansible-lint (production profile) on roles and playbooks, and the changelog fragments."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
BUILD = os.path.join(REPO, 'build')
PLUGIN_TYPES = {'modules': 'module', 'filter': 'filter', 'inventory': 'inventory', 'lookup': 'lookup',
                'callback': 'callback', 'test': 'test', 'connection': 'connection'}


def run(argv, cwd=REPO, timeout=1800, **env):
    environ = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    environ.update(env)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ, check=False)


def tracked_files() -> list[str]:
    out = run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard']).stdout
    return [p for p in out.split('\0') if p and os.path.lexists(os.path.join(REPO, p))]


def python_shims() -> str:
    """A directory of pythonX.Y links to every interpreter that really runs, so that
    ansible-test checks module code on each Python it supports that this machine has."""
    shims = os.path.join(BUILD, 'pythons')
    os.makedirs(shims, exist_ok=True)
    for minor in range(8, 14):
        name = f'python3.{minor}'
        candidates = sorted(glob.glob(os.path.expanduser(f'~/.pyenv/versions/3.{minor}.*/bin/{name}')))
        candidates += [p for p in (shutil.which(name, path='/usr/bin:/usr/local/bin'),) if p]
        for candidate in candidates:
            if subprocess.run([candidate, '-c', 'pass'], capture_output=True, check=False).returncode == 0:
                link = os.path.join(shims, name)
                if os.path.lexists(link):
                    os.unlink(link)
                os.symlink(candidate, link)
                break
    return shims


def plugins() -> list[tuple[str, str]]:
    found = []
    for directory, kind in PLUGIN_TYPES.items():
        for path in sorted(glob.glob(os.path.join(REPO, 'plugins', directory, '*.py'))):
            name = os.path.basename(path)[:-3]
            if not name.startswith('_'):
                found.append((kind, f'cyrus.ha.{name}'))
    return found


def test_sanity_ignore_files_are_empty():
    for path in glob.glob(os.path.join(REPO, 'tests', 'sanity', 'ignore-*.txt')):
        with open(path, encoding='utf-8') as handle:
            assert handle.read().strip() == '', f'{path} must stay empty: fix the code instead'


@pytest.mark.slow
def test_ansible_test_sanity():
    root = os.path.join(BUILD, 'sanity', 'ansible_collections', 'cyrus', 'ha')
    if os.path.isdir(root):
        for entry in os.listdir(root):
            if entry != 'tests':
                path = os.path.join(root, entry)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        for entry in os.listdir(os.path.join(root, 'tests')):
            if entry != 'output':   # keep ansible-test's venvs between runs
                path = os.path.join(root, 'tests', entry)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    os.makedirs(root, exist_ok=True)
    for rel in tracked_files():
        src, dst = os.path.join(REPO, rel), os.path.join(root, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    # ansible-test lists files with git: give the copy its own repository.
    for argv in (['git', 'init', '-q'], ['git', 'add', '-A']):
        assert run(argv, cwd=root).returncode == 0
    path = python_shims() + os.pathsep + os.environ.get('PATH', '')
    proc = run([os.path.join(BIN, 'ansible-test'), 'sanity', '--venv', '--color', 'no'], cwd=root, PATH=path)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines()
             if line.startswith(('ERROR', 'FATAL', 'Running sanity', 'WARNING: Skipping'))]
    assert proc.returncode == 0, '\n'.join(lines) + '\n' + proc.stderr[-3000:]
    assert any('Running sanity test "validate-modules"' in line for line in lines)


@pytest.mark.parametrize('kind, name', plugins())
def test_ansible_doc_renders(kind, name):
    proc = run([os.path.join(BIN, 'ansible-doc'), '-t', kind, name])
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout and 'EXAMPLES' in proc.stdout, proc.stdout[:500]
    assert '[WARNING]' not in proc.stderr, proc.stderr


def test_ansible_lint_production_profile():
    targets = [d for d in ('roles', 'playbooks') if glob.glob(os.path.join(REPO, d, '*'))]
    assert targets, 'nothing to lint'
    proc = run([os.path.join(BIN, 'ansible-lint'), '--offline', '--profile', 'production', '--nocolor', *targets])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_changelog_fragments_lint():
    proc = run([os.path.join(BIN, 'antsibull-changelog'), 'lint'])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_built_collection_installs_and_works(tmp_path):
    dist = tmp_path / 'dist'
    proc = run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(dist)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tarballs = list(dist.glob('cyrus-ha-*.tar.gz'))
    assert len(tarballs) == 1
    listing = run(['tar', '-tzf', str(tarballs[0])]).stdout.split()
    assert 'plugins/filter/text_table.py' in listing and 'galaxy.yml' not in listing
    assert not [p for p in listing if p.startswith(('tests/output', '.venv', 'build/', '.git/'))]
    # The built-in lab (its builder, fence agent, hooks, vars with its passwords, rigs) never ships.
    assert not [p for p in listing if p == 'lab' or p.startswith('lab/')], [p for p in listing if 'lab' in p]
    assert 'roles/drill/tasks/report.yml' in listing and 'examples/README.md' in listing
    install = tmp_path / 'installed'
    work = tmp_path / 'elsewhere'
    work.mkdir()
    cfg = work / 'ansible.cfg'
    cfg.write_text(f'[defaults]\ncollections_path = {install}\n', encoding='utf-8')
    env = {'ANSIBLE_CONFIG': str(cfg)}
    proc = run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '-p', str(install), str(tarballs[0])],
               cwd=str(work), **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (install / 'ansible_collections' / 'cyrus' / 'ha' / 'MANIFEST.json').is_file(), proc.stdout
    doc = run([os.path.join(BIN, 'ansible-doc'), '-t', 'filter', 'cyrus.ha.text_table'], cwd=str(work), **env)
    assert doc.returncode == 0 and str(install) in doc.stdout, doc.stdout + doc.stderr
    play = work / 'play.yml'
    play.write_text('- hosts: localhost\n  gather_facts: false\n  tasks:\n'
                    '    - ansible.builtin.assert:\n'
                    "        that: \"([{'a': 1}] | cyrus.ha.text_table(['a'])) == 'a\\n-\\n1\\n'\"\n",
                    encoding='utf-8')
    proc = run([os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(play)],
               cwd=str(work), **env)
    assert proc.returncode == 0 and 'failed=0' in proc.stdout, proc.stdout + proc.stderr


def test_the_product_names_nothing_of_the_lab():
    """`cyha` (the lab's prefix), its fence agent and its builder appear only in lab/, tests/ and bench/."""
    product = [p for p in tracked_files() if p.startswith(('playbooks/', 'roles/', 'plugins/', 'examples/', 'meta/'))]
    assert product, 'no product files found'
    hits = []
    for rel in product:
        with open(os.path.join(REPO, rel), encoding='utf-8', errors='replace') as handle:
            text = handle.read()
        hits += [f'{rel}: {word}' for word in ('cyha', 'fence_cyhalab', 'lab.py') if word in text]
    assert not hits, '\n'.join(hits)


def test_test_file_basenames_are_unique():
    """pytest's default import mode needs unique basenames across the whole tests tree."""
    seen: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(REPO, 'tests', '**', 'test_*.py'), recursive=True)):
        name = os.path.basename(path)
        assert name not in seen, f'{path} and {seen[name]} share a basename'
        seen[name] = path
