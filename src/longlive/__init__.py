"""longlive: real-time, interactive, long video generation with LongLive."""
