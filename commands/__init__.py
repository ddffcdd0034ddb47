"""The face of the house: the healthbook command, the demo, the identity-app stand-in and terminal rendering."""
