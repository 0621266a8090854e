# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sphinx configuration of the docs site that `make docs` builds (offline: no intersphinx)."""

project = 'cyrus.ha'
copyright = 'cyrus.ha contributors'
title = 'cyrus.ha'
html_short_title = 'cyrus.ha'

extensions = ['sphinx_antsibull_ext']

pygments_style = 'ansible'
highlight_language = 'YAML+Jinja'

html_theme = 'sphinx_ansible_theme'
html_show_sphinx = False
display_version = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False

default_role = 'any'
nitpicky = True

# The generated pages refer to a few labels of Ansible's own documentation. Rather than fetch its
# inventory, write one that holds just those labels (a label missing here fails the build).
ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/latest/'
ANSIBLE_LABELS = {
    'common_return_values': ('reference_appendices/common_return_values.html', 'Return Values'),
    'ansible_configuration_settings': ('reference_appendices/config.html', 'Ansible Configuration Settings'),
    'ansible_collections.ansible.builtin.async_status_module':
        ('collections/ansible/builtin/async_status_module.html', 'ansible.builtin.async_status module'),
    'ansible_collections.ansible.builtin.include_role_module':
        ('collections/ansible/builtin/include_role_module.html', 'ansible.builtin.include_role module'),
}


def _ansible_inventory() -> str:
    import os
    import zlib

    out = os.environ.get('CYRUS_HA_DOCS_OUT') or os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'build', 'docs')
    path = os.path.join(out, 'ansible.inv')
    body = ''.join(f'{name} std:label -1 {uri} {title}\n' for name, (uri, title) in sorted(ANSIBLE_LABELS.items()))
    header = '# Sphinx inventory version 2\n# Project: Ansible\n# Version: latest\n# The remainder of this file is compressed using zlib.\n'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as handle:
        handle.write(header.encode() + zlib.compress(body.encode()))
    return os.path.abspath(path)


extensions.append('sphinx.ext.intersphinx')
intersphinx_mapping = {'ansible_devel': (ANSIBLE_DOCS, _ansible_inventory())}
intersphinx_timeout = 1
