pytest_plugins = ["tests.dynamo_fixtures"]
