"""HTTP routes: thin controllers that parse, call one service function and answer."""
