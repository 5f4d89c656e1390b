"""The floor of the engine: the YAML files' schemas, the schedules' calendar, the loader."""
