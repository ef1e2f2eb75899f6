"""GPT policy and motion completion: see README.md beside this file."""
