"""Who asks the engine for runs besides people: drills, alerts, a drill's evidence."""
