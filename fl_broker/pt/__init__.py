"""PyTorch support, the optional `pt` extra (`pip install 'fl-broker[pt]'`): modules in fl-broker's model
format (a dict of numpy arrays) and a file persistor for PyTorch models. Importing any module of this
package imports torch; nothing else in fl-broker imports it."""
