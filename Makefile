# cyrus.ha: the two commands of the README, and their parts.
#   make lab    bring the built-in lab up and run the main job on it
#   make test   every test: sanity, docs, build, lint, unit, integration (on the lab)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON     ?= python3
VENV       ?= .venv
VPY        := $(VENV)/bin/python
LAB_DIR    ?= /var/lib/cyha-lab
FRONTENDS  ?= 2
BACKENDS   ?= 2
SPARES     ?= 1
REPLICA_PAIRS ?= 1
REPORTS    ?= build/reports
# extra lab.py up arguments, for example --systemd (hosts with their own root filesystem and systemd)
LAB_ARGS   ?=
PYTEST_ARGS ?=
LINK       := build/collections/ansible_collections/cyrus/ha

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export CYHA_LAB_DIR := $(LAB_DIR)
export ANSIBLE_FORCE_COLOR ?= 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help deps env lab lab-up lab-down lab-status test test-quality test-unit test-integration \
        sanity lint build docs clean

help:
	@echo 'make lab         lab up + the main job (host table) on it'
	@echo 'make test        every test (sanity, docs, build, lint, unit, integration)'
	@echo 'make lab-up / lab-down / lab-status    the lab alone (FRONTENDS=2 BACKENDS=2 SPARES=1)'
	@echo 'make test-quality / test-unit / test-integration    one part of make test'
	@echo 'make build / docs    the collection tarball (build/dist) / the docs site (build/docs/html)'

deps:
	@$(PYTHON) tools/install-deps.py lab test

$(VENV)/.stamp: requirements.txt tests/requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r tests/requirements-dev.txt
	touch $@

$(LINK):
	mkdir -p $(dir $(LINK))
	ln -sfn ../../../.. $(LINK)

env: $(VENV)/.stamp $(LINK)
	@$(VPY) tools/install-ansible-test-bootstrap.py

lab-up: deps env
	$(PYTHON) lab/lab.py up --frontends $(FRONTENDS) --backends $(BACKENDS) --spares $(SPARES) --replica-pairs $(REPLICA_PAIRS) $(LAB_ARGS)

lab-down:
	$(PYTHON) lab/lab.py down

lab-status:
	@$(PYTHON) lab/lab.py status

# The lab's two inventory sources: how to reach each host (inventory.yml) and the Murder itself, read
# by the cyrus.ha.murder inventory plugin (topology.yml: groups and murder_* host variables).
LAB_INVENTORY := -i $(LAB_DIR)/inventory.yml -i $(LAB_DIR)/topology.yml
# The lab's site variables (lab/vars: users and lab-only passwords, the warm-spare pairs on the lab's SAN disks).
LAB_VARS := -e @lab/vars/murder.yml -e @lab/vars/warm_spare.yml -e @lab/vars/replication.yml

lab: lab-up
	mkdir -p $(REPORTS)/drill
	@echo '== 1/4 every host over SSH: facts and a table of hosts'
	$(VENV)/bin/ansible-playbook $(LAB_INVENTORY) playbooks/hosts_report.yml \
	    -e hosts_report_hosts=cyha_lab -e hosts_report_file=$(CURDIR)/$(REPORTS)/hosts.txt
	@echo '== 2/4 deploy the Cyrus Murder with warm-spare pairs (backends on their SAN volumes)'
	$(VENV)/bin/ansible-playbook $(LAB_INVENTORY) $(LAB_VARS) playbooks/warm_spare.yml
	@echo '       and the replica pair: be3 replicating to the host replica (Cyrus rolling replication)'
	$(VENV)/bin/ansible-playbook $(LAB_INVENTORY) $(LAB_VARS) playbooks/replication.yml
	@echo '== 3/4 qualify storage: a directory the backends and the spare share (single-host and cross-host'
	@echo '       checks), then each backend mail store on its SAN volume (single-host checks)'
	$(VENV)/bin/ansible-playbook $(LAB_INVENTORY) playbooks/storage_probe.yml \
	    -e storage_probe_hosts=backends:spares -e '{"storage_probe_paths": ["/var/spool/cyrus-ha"]}' \
	    -e storage_probe_report_dir=$(CURDIR)/$(REPORTS) -e storage_probe_report_file=$(CURDIR)/$(REPORTS)/storage_probe_shared.json
	set -e; for n in $$(seq 1 $(BACKENDS)); do \
	  $(VENV)/bin/ansible-playbook $(LAB_INVENTORY) playbooks/storage_probe.yml \
	    -e storage_probe_hosts=be$$n -e "{\"storage_probe_paths\": [\"/srv/cyrus-ha/be$$n/spool\"]}" \
	    -e storage_probe_report_dir=$(CURDIR)/$(REPORTS) -e storage_probe_report_file=$(CURDIR)/$(REPORTS)/storage_probe_be$$n.json; \
	done
	@echo '== 4/4 failover drills under mail traffic: be1 to the spare and back (a SAN pair), canaries and invariants verified'
	$(VENV)/bin/ansible-playbook $(LAB_INVENTORY) $(LAB_VARS) -e @lab/vars/traffic.yml playbooks/drill.yml \
	    -e warm_spare_instance=be1 -e drill_frontend=fe1 -e drill_user=alice -e drill_password=cyha-lab-alice \
	    -e drill_report_dir=$(CURDIR)/$(REPORTS)/drill -e drill_id=lab
	@echo '       and the replica pair under mail traffic: be3 promoted on the host replica and back, nothing lost'
	$(VENV)/bin/ansible-playbook $(LAB_INVENTORY) $(LAB_VARS) -e @lab/vars/traffic.yml -e @lab/vars/replica_drill.yml \
	    playbooks/replica_drill.yml -e replication_instance=be3 -e drill_frontend=fe1 -e drill_user=dave \
	    -e drill_password=cyha-lab-dave -e drill_report_dir=$(CURDIR)/$(REPORTS)/drill -e drill_id=lab
	@$(PYTHON) lab/report_index.py $(REPORTS) >/dev/null
	@echo "lab: reports in $(REPORTS)/: index.html (open it: every report on one page), hosts.txt, storage_probe_*.json and storage-probe-*.md, drill/ (JSON, Markdown, SVG timeline)"
	@echo "lab: inventory $(LAB_DIR)/inventory.yml + $(LAB_DIR)/topology.yml (cyrus.ha.murder); 'make lab-down' removes the lab"

# The quality and unit tests use no lab and mostly the CPU; the integration tests mostly wait on the lab.
# They run side by side; the quality and unit output follows the integration run, then the summary lines
# of both. Either failing fails.
test: deps env
	@mkdir -p build
	@side=; trap '[ -n "$$side" ] && kill $$side 2>/dev/null' INT TERM; \
	$(VENV)/bin/pytest -c tests/pytest.ini tests/quality tests/unit $(PYTEST_ARGS) >build/test-quality-unit.log 2>&1 & side=$$!; \
	$(VENV)/bin/pytest -c tests/pytest.ini tests/integration --durations=40 $(PYTEST_ARGS) 2>&1 | tee build/test-integration.log; \
	main=$${PIPESTATUS[0]}; wait $$side; side_rc=$$?; \
	echo '== tests/quality and tests/unit (run beside tests/integration)'; cat build/test-quality-unit.log; \
	for log in build/test-integration.log build/test-quality-unit.log; do \
	  echo "== summary of $$log"; grep -E '^(FAILED|ERROR|SKIPPED|XFAIL|XPASS|=+ .* in [0-9.]+s)' $$log | tail -n 40; \
	done; \
	echo "make test: tests/integration exited $$main, tests/quality and tests/unit exited $$side_rc"; \
	[ $$main -eq 0 ] && [ $$side_rc -eq 0 ]

test-quality: deps env
	$(VENV)/bin/pytest -c tests/pytest.ini tests/quality $(PYTEST_ARGS)

test-unit: env
	$(VENV)/bin/pytest -c tests/pytest.ini tests/unit $(PYTEST_ARGS)

test-integration: deps env
	$(VENV)/bin/pytest -c tests/pytest.ini tests/integration $(PYTEST_ARGS)

build: env
	mkdir -p build/dist
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build/dist

# The docs site, offline (tools/docs/build.py): antsibull-docs writes the plugin, role and guide pages
# (docs/docsite) of the collection as the controller resolves it, then Sphinx builds them with no
# intersphinx fetch; a warning fails.
docs: env
	$(VPY) tools/docs/build.py build/docs

clean: lab-down
	rm -rf build tests/output
