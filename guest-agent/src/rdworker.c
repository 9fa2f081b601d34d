/* Guarded pipe reads: process-pipe reads on a small worker-thread pool while a share is attached. */
#include "agent_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* read(2) on a pipe sleeps uninterruptibly on the pipe's mutex, and a process splicing
 * from a FUSE file into that pipe (busybox cat uses sendfile) holds the mutex while it
 * waits for the FUSE server, i.e. for this loop, which relays the share's requests
 * (SPEC 6.4). So process-pipe reads run on worker threads: the loop waits briefly for
 * the result; if the read is stuck it goes on, and the worker reports through an
 * eventfd once the read returns. */

static void *rd_main(void *arg)
{
	struct rd_worker *w = arg;
	struct rd_pool *pool = w->pool;
	pthread_mutex_lock(&pool->mu);
	for (;;) {
		while (!w->busy || w->done)
			pthread_cond_wait(&pool->job_cv, &pool->mu);
		int fd = w->fd;
		size_t len = w->len;
		pthread_mutex_unlock(&pool->mu);
		ssize_t n = read(fd, w->buf, len);
		int e = errno;
		pthread_mutex_lock(&pool->mu);
		w->res = n;
		w->err = e;
		w->done = true;
		if (w->detached) {
			uint64_t one = 1;
			ssize_t wr = write(pool->efd, &one, sizeof(one));
			(void)wr;
		}
		pthread_cond_broadcast(&pool->done_cv);
	}
	return NULL;
}

static struct rd_worker *rd_idle(struct rd_pool *pool)
{
	for (int i = 0; i < RD_WORKERS_MAX; i++) {
		struct rd_worker *w = pool->workers[i];
		if (w && !w->busy)
			return w;
		if (!w) {
			w = calloc(1, sizeof(*w));
			if (!w)
				return NULL;
			w->pool = pool;
			pthread_t th;
			pthread_attr_t at;
			pthread_attr_init(&at);
			pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
			pthread_attr_setstacksize(&at, 64 * 1024);
			int r = pthread_create(&th, &at, rd_main, w);
			pthread_attr_destroy(&at);
			if (r != 0) {
				free(w);
				return NULL;
			}
			pool->workers[i] = w;
			return w;
		}
	}
	return NULL;
}

void rd_init(struct agent *ag)
{
	pthread_mutex_init(&ag->rd.mu, NULL);
	pthread_cond_init(&ag->rd.job_cv, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ag->rd.done_cv, &ca);
	pthread_condattr_destroy(&ca);
	ag->rd.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

ssize_t guarded_read(struct agent *ag, struct chan *c, uint8_t *buf, size_t len)
{
	/* Without an attached share no splice can hold a pipe waiting for this loop: read directly
	 * (a worker handoff costs two context switches per read, which is most of an exec under TCG). */
	if (ag->rd.efd < 0 || c->tcp || !any_share(ag))
		return read(c->rw.fd, buf, len);
	if (len > SM_DATA_CHUNK_BYTES)
		len = SM_DATA_CHUNK_BYTES;
	pthread_mutex_lock(&ag->rd.mu);
	struct rd_worker *w = rd_idle(&ag->rd);
	if (!w) {
		pthread_mutex_unlock(&ag->rd.mu);
		errno = EAGAIN; /* every worker is stuck: rd_collect retries once one is free */
		c->r_stuck = true;
		return -1;
	}
	w->busy = true;
	w->done = w->detached = false;
	w->fd = c->rw.fd;
	w->len = len;
	w->c = c;
	pthread_cond_broadcast(&ag->rd.job_cv);
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_nsec += RD_WAIT_MS * 1000000L;
	if (dl.tv_nsec >= 1000000000L)
		dl.tv_sec++, dl.tv_nsec -= 1000000000L;
	while (!w->done)
		if (pthread_cond_timedwait(&ag->rd.done_cv, &ag->rd.mu, &dl) == ETIMEDOUT)
			break;
	if (!w->done) {
		w->detached = true;
		c->r_stuck = true;
		c->rd = w;
		pthread_mutex_unlock(&ag->rd.mu);
		errno = EAGAIN;
		return -1;
	}
	ssize_t n = w->res;
	int e = w->err;
	if (n > 0)
		memcpy(buf, w->buf, (size_t)n);
	w->busy = false;
	w->c = NULL;
	pthread_mutex_unlock(&ag->rd.mu);
	errno = e;
	return n;
}

/* A channel goes away while its read is stuck: the result will be discarded. */
void rd_forget(struct agent *ag, struct chan *c)
{
	if (!c->rd)
		return;
	pthread_mutex_lock(&ag->rd.mu);
	c->rd->c = NULL;
	pthread_mutex_unlock(&ag->rd.mu);
	c->rd = NULL;
}

/* eventfd: deliver the results of reads that were stuck. */
void rd_collect(struct agent *ag)
{
	uint64_t v;
	ssize_t r = read(ag->rd.efd, &v, sizeof(v));
	(void)r;
	for (int i = 0; i < RD_WORKERS_MAX; i++) {
		struct rd_worker *w = ag->rd.workers[i];
		if (!w)
			continue;
		pthread_mutex_lock(&ag->rd.mu);
		bool ready = w->busy && w->detached && w->done;
		struct chan *c = w->c;
		ssize_t n = w->res;
		int err = w->err;
		pthread_mutex_unlock(&ag->rd.mu);
		if (!ready)
			continue;
		if (c && c->rd == w) {
			c->rd = NULL;
			c->r_stuck = false;
			if (n > 0 && c->rw.fd >= 0) {
				bool live = !c->removed && c->state == CH_OPEN && ag->session;
				if (c->collect) {
					size_t k = (size_t)n;
					if (k > SM_COLLECT_BUF_BYTES - c->clen)
						k = SM_COLLECT_BUF_BYTES - c->clen; /* cannot happen: clen only shrank */
					memcpy(c->cbuf + c->clen, w->buf, k);
					c->clen += (uint32_t)k;
					collect_flush(ag, c);
				} else if (live) {
					/* the read was sized within the credit, which has only grown since */
					send_data(ag, c->id, w->buf, (size_t)n);
					c->credit -= (uint64_t)n < c->credit ? (uint64_t)n : c->credit;
				}
			} else if (n < 0 && (err == EAGAIN || err == EINTR)) {
				/* Not the end: the read waited for the pipe's mutex (a process was splicing
				 * into the pipe), got it after the splice, and found the pipe empty (cat's
				 * last sendfile at EOF writes nothing). Taking it for EOF closed the read end
				 * under the process, which then died of SIGPIPE with its output lost. The
				 * loop reads again when the pipe is readable. */
				c->r_blocked = true;
			} else if (n <= 0 && c->rw.fd >= 0) {
				chan_read_eof(ag, c);
			}
			if (c->proc && c->proc->exited)
				proc_check_done(ag, c->proc);
			chan_maybe_release(ag, c);
		}
		pthread_mutex_lock(&ag->rd.mu);
		w->busy = false;
		w->detached = false;
		w->c = NULL;
		pthread_mutex_unlock(&ag->rd.mu);
		/* a worker is free again: channels that found none may read again */
		for (int k = 0; k < SM_MAX_CHANNELS; k++)
			if (ag->chans[k].r_stuck && !ag->chans[k].rd)
				ag->chans[k].r_stuck = false;
	}
}
