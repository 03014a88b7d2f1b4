"""The conformance suite's harness: the server, the clients' commands, a publisher, a token server."""
