"""Target-item scoring (CTR) models over a behaviour history: AttnDIN, BST, ...

They subclass RecBole's ``SequentialRecommender`` (RecBole builds the history fields only
for sequential models), but score a (user, history, target item) row like a
context-aware model; see each file's docstring.
"""
