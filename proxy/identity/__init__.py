"""Identity: a Keystone v3 subset (users, projects, roles, tokens, EC2 keys) on the ring."""
