"""The citizen page: the identity-app stand-in's flow to the health book (a demo and test tool)."""
