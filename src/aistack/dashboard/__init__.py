"""The web dashboard: `aistack serve dashboard` (see `app.create_app` and `app.run`)."""
