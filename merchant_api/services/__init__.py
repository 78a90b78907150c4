"""The API's logic: each function does one operation in one transaction (db.run_write) and
commits before it returns, so that a handler answers 2xx only for what is committed."""
