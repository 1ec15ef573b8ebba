"""Everything that talks to GitHub or reacts to it: the client, the webhook router and its handlers."""
