/* The agent's operations and capabilities: one table for the request dispatch (session.c), the
 * caps list of the hello frame (session.c) and the op names and argument checks of the protocol
 * (proto.c, args_check_op). Adding an op is one row here plus its handler and its args check.
 *
 * X(name, handler, args check, need), in the order the caps are announced:
 *   handler    void h(struct agent *, uint32_t id, const struct cb_doc *, uint32_t args), agent only;
 *              NULL for a row that is a capability (a feature) but not an op
 *   args check int c(const struct cb_doc *, uint32_t args, struct sm_err *), proto.c: 0, or -errno
 *              with the error filled (see args_check_op); NULL with a NULL handler
 *   need       when the row is announced and dispatched: SM_NEED_NONE always, SM_NEED_WORK_CGROUP
 *              when the work cgroup exists, SM_NEED_EGRESS when egress is on (SPEC 6.5) */
#ifndef SM_OPS_H
#define SM_OPS_H

enum sm_need { SM_NEED_NONE, SM_NEED_WORK_CGROUP, SM_NEED_EGRESS };

#define SM_OPS(X)                                                                                  \
	X("exec", op_exec, chk_exec, SM_NEED_NONE)                                                 \
	X("spawn", op_spawn, chk_spawn, SM_NEED_NONE)                                              \
	X("signal", op_signal, chk_signal, SM_NEED_NONE)                                           \
	X("resize", op_resize, chk_resize, SM_NEED_NONE)                                           \
	X("close-stdin", op_close_stdin, chk_pid, SM_NEED_NONE)                                    \
	X("write-file", op_write_file, chk_write_file, SM_NEED_NONE)                               \
	X("read-file", op_read_file, chk_read_file, SM_NEED_NONE)                                  \
	X("workload-signal", op_workload_signal, chk_signum, SM_NEED_NONE)                         \
	X("tcp-connect", op_tcp_connect, chk_tcp_connect, SM_NEED_NONE)                            \
	X("resume", op_resume, chk_resume, SM_NEED_NONE)                                           \
	X("ping", op_ping, chk_none, SM_NEED_NONE)                                                 \
	X("shutdown", op_shutdown, chk_none, SM_NEED_NONE)                                         \
	X("stats", op_stats, chk_none, SM_NEED_NONE)                                               \
	X("tty", NULL, NULL, SM_NEED_NONE)                                                         \
	X("chain", NULL, NULL, SM_NEED_NONE)                                                       \
	X("fs-attach", op_fs_attach, chk_fs_attach, SM_NEED_NONE)                                  \
	X("fs-detach", op_fs_detach, chk_fs_detach, SM_NEED_NONE)                                  \
	X("fs", NULL, NULL, SM_NEED_NONE)                                                          \
	X("agent-exe", NULL, NULL, SM_NEED_NONE)                                                   \
	X("work-cgroup", NULL, NULL, SM_NEED_WORK_CGROUP)                                          \
	X("egress", NULL, NULL, SM_NEED_EGRESS)                                                    \
	X("dial-answer", op_dial_answer, chk_dial_answer, SM_NEED_EGRESS)                          \
	X("dns-answer", op_dns_answer, chk_dns_answer, SM_NEED_EGRESS)

#endif
