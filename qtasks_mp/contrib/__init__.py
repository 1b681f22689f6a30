"""Integrations with other frameworks, at QTasks' import paths (`qtasks.contrib`)."""
