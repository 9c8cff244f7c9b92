"""``backend: swarm``: a rendered compose project deployed as a Docker Swarm stack (`docker stack deploy`
semantics) through the Engine API. ``translate`` and ``plan`` are pure; ``engine`` is the only module that
reaches Docker; ``converge.SwarmConverger`` has the public methods of ``reconciler.converge.Converger``."""
