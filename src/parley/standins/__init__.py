"""Local stand-ins for hosted services we cannot reach from a test machine.

Each one is a real HTTP server that answers in the service's documented wire format, so the
provider code under test is the code that talks to the real service.
"""
