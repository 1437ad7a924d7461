"""The device agent: supervisor, deployer, store, local IPC server."""
