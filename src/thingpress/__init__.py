"""The thingpress CLI, the embedded local AWS stack and the synthetic manifest generators."""
