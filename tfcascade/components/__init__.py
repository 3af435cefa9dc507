"""Custom TFX components of the cascade pipeline.

- ``recflow_example_gen``: the Beam preprocessing of a RecFlow-layout folder -> ``Examples``.
- ``joint_recall_validator``: Joint Recall@K@q_T evaluation and blessing.
- ``atomic_pusher``: Pusher that publishes numeric versions with one atomic rename.
- ``blessing``: the blessing rule and its ML Metadata baseline look-up (no TFX import).

Submodules are not imported here: importing ``components`` must not load TFX.
"""
