"""The reproduction glue: the paper's tables as data, cached runs over seeds, statistics,
figures and the papermill runner the notebooks and `python -m canlib reproduce` use."""
