"""Stages normalize and collect: from finished runs to the runs table, the estimators' only
input (`normalize`: L_u, bpc and bpb per checkpoint; `collect`: one table; `table`: reading and
checking a runs table from this pipeline or any other training stack)."""
