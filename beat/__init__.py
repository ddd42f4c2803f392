"""The beat schedule: data only, one periodic check per image definition."""
