"""The admin console of a federation (`fl-broker admin`): commands, rendering, the interactive session."""
