# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What users and Galaxy see of the collection: the docs site builds without a warning, antsibull-docs
lints it clean, every role entry point the collection calls has an argument spec, Galaxy's importer
takes the built tarball without a warning, one ansible-core floor is stated everywhere, the changelog
is released at the collection's version, and an execution environment gets no lab or test package."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
FILTERS = ('cluster_config', 'drill_record', 'drill_report', 'ha_cluster_vars', 'mupdate_list_check', 'replication_diff', 'replication_diverged',
           'storage_report', 'text_table')


def run(argv, cwd=REPO, timeout=170, **env):
    environ = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
                   PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
    environ.update(env)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ, check=False)


def load(rel):
    with open(os.path.join(REPO, rel), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def read(rel):
    with open(os.path.join(REPO, rel), encoding='utf-8') as handle:
        return handle.read()


@pytest.mark.slow
def test_docs_site_builds_without_a_warning(tmp_path):
    proc = run([sys.executable, os.path.join(REPO, 'tools', 'docs', 'build.py'), str(tmp_path)])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert not re.search(r'WARNING|ERROR', output), output[-6000:]
    html = tmp_path / 'html' / 'collections' / 'cyrus' / 'ha'
    pages = {p.name for p in html.glob('*.html')}
    for role in os.listdir(os.path.join(REPO, 'roles')):
        assert f'{role}_role.html' in pages, sorted(pages)
    for name in FILTERS:
        assert f'{name}_filter.html' in pages, sorted(pages)
    assert 'murder_inventory.html' in pages and 'service_ip_module.html' in pages
    guides = {p.stem for p in (html / 'docsite').glob('*.html')}
    assert {'getting_started', 'storage_qualification', 'failover', 'drills', 'choosing_failover'} <= guides, guides


@pytest.mark.slow
def test_antsibull_docs_lint_is_clean():
    proc = run([os.path.join(BIN, 'antsibull-docs'), 'lint-collection-docs', '--plugin-docs', '.'])
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr[-3000:]
    assert 'error' not in proc.stderr.lower(), proc.stderr[-3000:]


def _entry_point_calls():
    """(role, tasks_from, where) of every include_role/import_role with tasks_from in playbooks and roles;
    a templated tasks_from stands for its default and every value the tree gives its variable."""
    files = glob.glob(os.path.join(REPO, 'playbooks', '**', '*.yml'), recursive=True)
    files += glob.glob(os.path.join(REPO, 'roles', '*', 'tasks', '*.yml'))
    texts = {path: read(path) for path in files}
    everything = '\n'.join(texts.values()) + read('README.md') + '\n'.join(
        read(p) for p in glob.glob(os.path.join(REPO, 'roles', '*', 'README.md')))
    calls = []

    def walk(node, path):
        if isinstance(node, dict):
            for key in ('ansible.builtin.include_role', 'ansible.builtin.import_role', 'include_role', 'import_role'):
                args = node.get(key)
                if isinstance(args, dict) and 'tasks_from' in args:
                    role = args['name'].split('.')[-1]
                    value = str(args['tasks_from'])
                    match = re.fullmatch(r"\{\{\s*(\w+)(?:\s*\|\s*default\('(\w+)'\))?\s*\}\}", value)
                    if match:
                        names = set(re.findall(rf"\b{match.group(1)}[:=]\s*'?(\w+)", everything))
                        names |= {match.group(2)} if match.group(2) else set()
                        assert names, f'{path}: no value found for {value}'
                    else:
                        names = {value}
                    calls.extend((role, name, os.path.relpath(path, REPO)) for name in names)
            for value in node.values():
                walk(value, path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for path, text in texts.items():
        walk(yaml.safe_load(text), path)
    return calls


def test_every_entry_point_the_collection_calls_has_an_argument_spec():
    calls = _entry_point_calls()
    assert ('cluster', 'start', 'playbooks/cluster_drill.yml') in calls and ('cluster', 'stop', 'playbooks/cluster.yml') in calls
    missing = []
    for role, entry, where in calls:
        specs = load(f'roles/{role}/meta/argument_specs.yml')['argument_specs']
        if entry not in specs:
            missing.append(f'{where}: cyrus.ha.{role} entry point {entry}')
        elif not specs[entry].get('description') or not specs[entry].get('short_description'):
            missing.append(f'roles/{role}/meta/argument_specs.yml: {entry} needs short_description and description')
        if not os.path.isfile(os.path.join(REPO, 'roles', role, 'tasks', f'{entry}.yml')):
            missing.append(f'{where}: roles/{role}/tasks/{entry}.yml does not exist')
    assert not missing, '\n'.join(missing)


def test_every_role_entry_point_is_described():
    for path in glob.glob(os.path.join(REPO, 'roles', '*', 'meta', 'argument_specs.yml')):
        with open(path, encoding='utf-8') as handle:
            specs = yaml.safe_load(handle)['argument_specs']
        for entry, spec in specs.items():
            assert spec.get('short_description') and spec.get('description'), f'{path}: {entry}'


def test_filters_are_documented_once_each():
    """One file per filter with its DOCUMENTATION; no YAML sidecar beside it (Galaxy would count it twice)."""
    directory = os.path.join(REPO, 'plugins', 'filter')
    assert not glob.glob(os.path.join(directory, '*.yml')) + glob.glob(os.path.join(directory, '*.yaml'))
    names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(directory, '*.py')))
    assert tuple(names) == FILTERS
    for name in names:
        text = read(f'plugins/filter/{name}.py')
        assert f"DOCUMENTATION = r'''\nname: {name}\n" in text and 'EXAMPLES = ' in text and 'RETURN = ' in text, name
        assert re.search(rf"return \{{'{name}': \w+\}}", text), f'{name}.py must define the filter {name} alone'


def _floor():
    match = re.fullmatch(r">=(\d+)\.(\d+)\.0", load('meta/runtime.yml')['requires_ansible'])
    assert match, 'meta/runtime.yml: requires_ansible must read >=X.Y.0'
    return int(match.group(1)), int(match.group(2))


def test_one_ansible_core_floor_everywhere():
    major, minor = _floor()
    floor = f'{major}.{minor}'
    for path in sorted(glob.glob(os.path.join(REPO, 'roles', '*', 'meta', 'main.yml'))):
        with open(path, encoding='utf-8') as handle:
            assert str(yaml.safe_load(handle)['galaxy_info']['min_ansible_version']) == floor, path
    requirements = [line.strip() for line in read('requirements.txt').splitlines() if line.startswith('ansible-core')]
    assert requirements == [f'ansible-core>={floor}.0'], requirements
    for rel in ('README.md', 'docs/docsite/rst/getting_started.rst'):
        stated = set(re.findall(r'ansible-core (\d+\.\d+)(?:\.0)? or newer', read(rel)))
        assert stated == {floor}, f'{rel} states {stated}, meta/runtime.yml {floor}'
        assert not re.search(r'ansible-core (?!%s)\d+\.\d+' % re.escape(floor), read(rel)), rel
    pins = re.findall(r'^ansible-core==(\d+)\.(\d+)\.\d+', read('tests/requirements-dev.txt'), re.M)
    assert len(pins) == 1 and (int(pins[0][0]), int(pins[0][1])) >= (major, minor), pins
    import ansible.release
    installed = tuple(int(x) for x in ansible.release.__version__.split('.')[:2])
    assert installed >= (major, minor), ansible.release.__version__


def test_jmespath_is_not_a_requirement():
    for rel in ('requirements.txt', 'tests/requirements-dev.txt', 'README.md', 'meta/execution-environment.yml'):
        assert 'jmespath' not in read(rel).lower(), rel
    for path in glob.glob(os.path.join(REPO, 'plugins', '**', '*.py'), recursive=True):
        assert 'jmespath' not in read(path), path


def test_changelog_is_released_at_the_collection_version():
    version = load('galaxy.yml')['version']
    releases = load('changelogs/changelog.yaml')['releases']
    assert version in releases, f'galaxy.yml {version} has no release in changelogs/changelog.yaml'
    assert os.path.isfile(os.path.join(REPO, 'CHANGELOG.rst'))
    assert f'v{version}\n' in read('CHANGELOG.rst')
    proc = run([os.path.join(BIN, 'antsibull-changelog'), 'lint-changelog-yaml', 'changelogs/changelog.yaml'])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_execution_environment_gets_no_lab_or_test_package():
    from bindep.depends import Depends

    meta = load('meta/execution-environment.yml')
    assert meta['dependencies'] == {'python': 'requirements.txt', 'system': 'bindep.txt'}
    depends = Depends(read('bindep.txt'))
    tagged = set()
    for line in read('bindep.txt').splitlines():
        line = line.split('#', 1)[0].strip()
        if line and ({'lab', 'test', 'dev'} & set(line.partition(' ')[2].strip('[] ').split())):
            tagged.add(line.split()[0])
    assert tagged
    for platform in (['platform:dpkg', 'platform:debian'], ['platform:rpm', 'platform:redhat']):
        ee = {rule[0] for rule in depends.active_rules(platform + ['default'])}
        assert ee and not ee & tagged, (platform, ee & tagged)
    proc = run([os.path.join(BIN, 'ansible-builder'), 'introspect', os.path.join(REPO, 'build', 'collections')])
    assert proc.returncode == 0, proc.stderr
    python = yaml.safe_load(proc.stdout.split('\n', 1)[1])['python']
    assert [line.split()[0] for line in python] == ['netaddr==1.3.0'], python


def test_make_deps_installs_the_same_packages_for_lab_and_test():
    """tools/install-deps.py reads bindep.txt: the lab and test profiles keep every package they had."""
    import importlib.util

    spec = importlib.util.spec_from_file_location('install_deps', os.path.join(REPO, 'tools', 'install-deps.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lab = module.wanted_packages(os.path.join(REPO, 'bindep.txt'), {'lab'})
    both = module.wanted_packages(os.path.join(REPO, 'bindep.txt'), {'lab', 'test'})
    assert lab[:4] == ['python3', 'python3-venv', 'openssh-client', 'git'], lab
    assert {'cyrus-imapd', 'openssh-server', 'e2fsprogs'} <= set(lab) and 'pacemaker' not in lab
    assert {'pacemaker', 'shellcheck', 'ctdb', 'libxml2-utils'} <= set(both) and 'openssh-clients' not in both


@pytest.mark.slow
def test_ansible_lint_from_the_collection_root():
    """As Galaxy runs it: no target, the collection root, production profile, no galaxy[...] finding."""
    proc = run([os.path.join(BIN, 'ansible-lint'), '--offline', '--profile', 'production', '--nocolor'])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert 'galaxy[' not in output and 'meta-runtime' not in output, output[-6000:]


@pytest.mark.slow
def test_galaxy_importer_takes_the_tarball_without_a_warning(tmp_path):
    dist = tmp_path / 'dist'
    proc = run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(dist)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tarball, = dist.glob('cyrus-ha-*.tar.gz')
    config = tmp_path / 'galaxy-importer.cfg'
    # Offline: no ansible-test (it would need a container), ansible-lint with --offline; ansible-doc runs.
    config.write_text('[galaxy-importer]\nrun_ansible_test = false\nrun_ansible_lint = true\n'
                      'offline_ansible_lint = true\nrun_ansible_doc = true\ncheck_changelog = true\n'
                      f'ansible_local_tmp = {tmp_path}/ansible-tmp\ntmp_root_dir = {tmp_path}\n', encoding='utf-8')
    proc = run([sys.executable, '-m', 'galaxy_importer.main', str(tarball)], cwd=str(tmp_path),
               GALAXY_IMPORTER_CONFIG=str(config))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    problems = [line for line in log.splitlines() if re.match(r'\s*(WARNING|ERROR)', line)]
    assert not problems, '\n'.join(problems)
    assert 'Importer processing completed successfully' in log, log[-3000:]
    for name in FILTERS:
        assert log.count(f'Loading filter {name}\n') == 1, f'filter {name} loaded other than once'
