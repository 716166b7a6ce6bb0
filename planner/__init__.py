"""raygate planner."""
