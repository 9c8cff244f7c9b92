"""Label keys we put on Docker objects; ownership is decided by these labels and nothing else.

The ``com.docker.compose.*`` keys are Docker Compose v2's own, so ``docker compose -p NAME ps/logs/down``
keep working on what we create. The ``io.reconciler.*`` keys are ours.
"""

from __future__ import annotations

from typing import Final

COMPOSE = "com.docker.compose"
PROJECT: Final = f"{COMPOSE}.project"
SERVICE: Final = f"{COMPOSE}.service"
CONTAINER_NUMBER: Final = f"{COMPOSE}.container-number"
ONEOFF: Final = f"{COMPOSE}.oneoff"
CONFIG_HASH: Final = f"{COMPOSE}.config-hash"
WORKING_DIR: Final = f"{COMPOSE}.project.working_dir"
CONFIG_FILES: Final = f"{COMPOSE}.project.config_files"
DEPENDS_ON: Final = f"{COMPOSE}.depends_on"
IMAGE: Final = f"{COMPOSE}.image"
NETWORK: Final = f"{COMPOSE}.network"
VOLUME: Final = f"{COMPOSE}.volume"
VERSION: Final = f"{COMPOSE}.version"

OURS = "io.reconciler"
MANAGED: Final = f"{OURS}.managed"  # "true" on every object we create
APP: Final = f"{OURS}.app"
ENVIRONMENT: Final = f"{OURS}.environment"
BRANCH: Final = f"{OURS}.branch"
EPHEMERAL: Final = f"{OURS}.ephemeral"  # "true" only on stacks removed with their branch
COMMIT: Final = f"{OURS}.commit"
# Who created the object: "<instance>/<app>/<environment>" (the instance id is kept in state_dir). Objects
# carrying another owner are never changed or removed; objects with no owner (made by an older release or
# by hand) are adopted.
OWNER: Final = f"{OURS}.owner"
# The checkout tree (directory name under state_dir/checkouts) a container was created against: trees
# still mounted by a live container are never swept.
CHECKOUT: Final = f"{OURS}.checkout"
# The version of the config-hash algorithm that stamped com.docker.compose.config-hash (absent: 0).
HASH_VERSION: Final = f"{OURS}.hash-version"
# Short hashes per compose key, so `plan` can say which fields changed without keeping any value in a label.
CONFIG_FIELDS: Final = f"{OURS}.config-fields"
# Containers whose namespaces a container joined at create (`network_mode`/`pid`/`ipc: service:NAME`), as
# "NAME=<container id>,...": when NAME's container is replaced, the joiner sits in a dead namespace and
# `plan` recreates it (Compose does the same).
JOINED: Final = f"{OURS}.joined"
JOB: Final = f"{OURS}.job"  # "<app>/<environment>/<job>" on the one-off and scratch containers of a job
# Docker Swarm stacks (backend: swarm). The namespace label is `docker stack deploy`'s own, so `docker stack
# ps/services/rm NAME` work on what we create.
STACK_NAMESPACE: Final = "com.docker.stack.namespace"
# The hash of the whole service spec we sent (on the service), and of its task template (on the tasks'
# containers): a rolling update is finished when every running task carries the task template's hash.
SPEC_HASH: Final = f"{OURS}.spec-hash"
TASK_HASH: Final = f"{OURS}.task-hash"
# The image ID the service's tag resolved to on the manager when deployed: a tag rebuilt in place updates.
IMAGE_ID: Final = f"{OURS}.image-id"
