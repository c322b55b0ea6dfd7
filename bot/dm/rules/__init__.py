"""The rules engine behind the DM's tools: characters, conditions (SRD 5.1), combat with initiative, attacks.

Pure and free of Discord and of the store: ``engine`` changes a ``state.Party`` value, ``render`` shows it.
``bot.dm.party`` is the service side that loads, changes and stores it.
"""
