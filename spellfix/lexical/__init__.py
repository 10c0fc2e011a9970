"""What training and serving both need to know about words: query normalisation, symspellpy's
dictionary, the known-word lexicon with wordfreq frequencies, and the dictionary candidates of the
encoder input.

Why a package of its own: the serving runtime (``spellfix.inference``, Triton's python backend)
must annotate and judge queries exactly as training did, without importing the training side
(``spellfix.data``, ``spellfix.training``, torch). Everything here is pure Python over the
standard library, symspellpy's data files and the tables shipped in ``spellfix/resources``.
"""
