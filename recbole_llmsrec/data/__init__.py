"""Dataset converters that write RecBole atomic files (see :mod:`recbole_llmsrec.data.amazon2023`)."""
