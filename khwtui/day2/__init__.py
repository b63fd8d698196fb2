"""Operations on a built cluster: backup and restore, certificate renewal, etcd recovery,
stop and start.
"""
