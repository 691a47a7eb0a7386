/*
 * ngx_supervisord C API, version 2.
 *
 * For balancer modules that want nginx to start and stop the processes behind
 * an upstream through supervisord. The names, signatures and meaning are those
 * of ngx_supervisord 1.4 (2010), so that a balancer written for it compiles
 * unchanged; the implementation is the Rust module's
 * (ngx_supervisord_module.so), which exports these functions with C linkage.
 * Load that module first: nginx loads modules with RTLD_GLOBAL, so a module
 * loaded after it resolves the functions when it is loaded. A balancer that
 * must also run without it can look them up with dlsym(RTLD_DEFAULT,
 * "ngx_supervisord_execute") instead of linking them.
 *
 * Backends are numbered in the order of the upstream's `server` lines (backup
 * servers included), from 0.
 */

#ifndef _NGX_SUPERVISORD_H_INCLUDED_
#define _NGX_SUPERVISORD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#ifndef NGX_SUPERVISORD_MODULE
#define NGX_SUPERVISORD_MODULE             1
#endif

#define NGX_SUPERVISORD_API_VERSION        2

/* commands */
#define NGX_SUPERVISORD_CMD_START          1
#define NGX_SUPERVISORD_CMD_STOP           2

/*
 * backend statuses: every status but UP means "this peer is down" to a
 * balancer
 */
#define NGX_SUPERVISORD_SRV_UP             0
#define NGX_SUPERVISORD_SRV_DOWN           1
#define NGX_SUPERVISORD_SRV_STARTING_UP    2
#define NGX_SUPERVISORD_SRV_SHUTTING_DOWN  3

/*
 * ngx_supervisord_load_t.load is in hundredths of a request per second per
 * active backend
 */
#define NGX_SUPERVISORD_LOAD_MULTIPLIER    100


/*
 * To be returned from a balancer's peer.init in place of NGX_OK:
 *   NGX_OK        go on: a backend is up, or the upstream has no
 *                 `supervisord`, or the module holds the request itself right
 *                 after this peer.init (it wraps the balancer of every
 *                 upstream it manages, outside any balancer stacked on it
 *                 such as keepalive, which would take NGX_BUSY for an
 *                 error);
 *   NGX_BUSY      no backend is up: the request is held (one is being
 *                 started) and resumed or answered later by ngx_supervisord;
 *                 needs nginx patched with init_busy (without it the request
 *                 is never held and NGX_OK is returned);
 *   an HTTP status (502, 503) the request is to be answered with at once;
 *   NGX_DECLINED  wrong arguments; NGX_ERROR internal error.
 */
ngx_int_t ngx_supervisord_check_servers(ngx_http_request_t *r);


/*
 * A checker says whether a command may be sent now (NGX_OK) or must wait
 * (anything else); e.g. "this backend has no requests in flight". It is asked
 * again periodically, at most for the upstream's supervisord_drain_timeout,
 * after which the command is sent anyway.
 */
typedef ngx_int_t (*ngx_supervisord_checker_pt)(
    ngx_http_upstream_srv_conf_t *uscf, ngx_uint_t backend);

/*
 * Queues a command (NGX_SUPERVISORD_CMD_START or _STOP) for a backend, or for
 * "any" backend when backend is -1 (start: the first DOWN one; stop: an UP
 * one). NGX_OK means accepted, not done: also when the upstream has no
 * `supervisord`, or the command was already done or in progress, or an "any"
 * command came too soon after the last command. NGX_DECLINED for a wrong
 * command or backend.
 */
ngx_int_t ngx_supervisord_execute(ngx_http_upstream_srv_conf_t *uscf,
    ngx_uint_t cmd, ngx_int_t backend, ngx_supervisord_checker_pt checker);


/*
 * Called in every worker after each change of a backend's status (and once per
 * backend when the worker starts). It must only update the balancer's own peer
 * list (e.g. its `down` flags), never resume or finalize requests. One monitor
 * per upstream: registering again replaces it. Register from the balancer's
 * init_upstream.
 */
typedef void (*ngx_supervisord_backend_pt)(ngx_http_upstream_srv_conf_t *uscf,
    ngx_uint_t backend, ngx_uint_t new_status);

ngx_int_t ngx_supervisord_add_backend_monitor(
    ngx_http_upstream_srv_conf_t *uscf, ngx_supervisord_backend_pt monitor);


typedef struct {
    ngx_uint_t   load;      /* reqs/s per active backend x LOAD_MULTIPLIER */
    ngx_uint_t   reqs;      /* requests over all workers during the interval */
    ngx_msec_t   interval;  /* the interval, in milliseconds */
    ngx_uint_t   aservers;  /* active (UP) backends */
    ngx_uint_t   nservers;  /* backends */
} ngx_supervisord_load_t;

/*
 * Called every supervisord_load_interval (default 60s) with the figures of the
 * interval just ended, in one worker per interval. One monitor per upstream:
 * registering again replaces it.
 */
typedef void (*ngx_supervisord_load_pt)(ngx_http_upstream_srv_conf_t *uscf,
    ngx_supervisord_load_t load);

ngx_int_t ngx_supervisord_add_load_monitor(ngx_http_upstream_srv_conf_t *uscf,
    ngx_supervisord_load_pt monitor);


#endif /* _NGX_SUPERVISORD_H_INCLUDED_ */
