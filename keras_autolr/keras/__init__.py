"""The Keras side of keras-autolr: the `AutoLR` callback and what it puts in
the train step (the per-step loss record, the in-graph schedule), the weight
copies and the files of `backup_dir`, and every private Keras name it uses
(`compat`). It drives the pure core (`keras_autolr.core`) and reads only its
public views and `Report`s.
"""
