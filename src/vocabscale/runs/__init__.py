"""Stages normalize and collect: from finished runs to the runs table, the estimators' only
input (commands `normalize` and `collect`; work `normalized_loss`: L_u, bpc and bpb per
checkpoint, `grid_table`: one table; `table`: reading and checking a runs table from this
pipeline or any other training stack)."""
