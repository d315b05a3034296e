"""HTTP: the connexion app, its middleware, handlers, JSON mapping and SSE responses."""
