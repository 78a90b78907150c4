"""Request and response bodies (msgspec structs): the API's contract, separate from the
services that fulfil it. Field constraints here appear in the OpenAPI schema at /schema."""
