"""The streaming voice pipeline: voice activity, turn-taking and barge-in on live audio."""
