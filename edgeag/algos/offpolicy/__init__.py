"""What DQN and TD3 share: the off-policy loop (`loop`), the replay buffer, the config
fields, and each engine's network groups and target updates."""
