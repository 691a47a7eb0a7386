/*
 * A balancer of the ngx_supervisord C API (include/ngx_supervisord.h), for the patched suite
 * (nginx-tests/tests/patched_api.rs): nginx's round robin with the API's hooks, each call
 * logged at notice so that the tests can see what the module told it and when; a stop checker
 * that refuses while a file exists; and a handler that calls ngx_supervisord_execute() with
 * the arguments of its query string and answers its return code.
 *
 *   upstream backend { ...; supervisord_api_test_balancer [checker_file]; }
 *   location = /execute { supervisord_api_test_execute; }
 *       GET /execute?upstream=backend&cmd=2&backend=1&checker=1  ->  "rc=0"
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_supervisord.h>


typedef struct {
    ngx_str_t  checker_file;
} ngx_http_supervisord_api_test_srv_conf_t;


static void *ngx_http_supervisord_api_test_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_supervisord_api_test_balancer(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_supervisord_api_test_execute(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_supervisord_api_test_commands[] = {

    { ngx_string("supervisord_api_test_balancer"),
      NGX_HTTP_UPS_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_supervisord_api_test_balancer,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("supervisord_api_test_execute"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_supervisord_api_test_execute,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_supervisord_api_test_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */
    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */
    ngx_http_supervisord_api_test_create_srv_conf, /* create server configuration */
    NULL,                                  /* merge server configuration */
    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_supervisord_api_test_module = {
    NGX_MODULE_V1,
    &ngx_http_supervisord_api_test_module_ctx,
    ngx_http_supervisord_api_test_commands,
    NGX_HTTP_MODULE,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_supervisord_api_test_create_srv_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool,
                       sizeof(ngx_http_supervisord_api_test_srv_conf_t));
}


static void
ngx_http_supervisord_api_test_backend_monitor(ngx_http_upstream_srv_conf_t *us,
    ngx_uint_t backend, ngx_uint_t new_status)
{
    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "api test: upstream \"%V\" backend %ui status %ui",
                  &us->host, backend, new_status);
}


static void
ngx_http_supervisord_api_test_load_monitor(ngx_http_upstream_srv_conf_t *us,
    ngx_supervisord_load_t load)
{
    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "api test: upstream \"%V\" load %ui reqs %ui interval %M "
                  "aservers %ui nservers %ui",
                  &us->host, load.load, load.reqs, load.interval,
                  load.aservers, load.nservers);
}


static ngx_int_t
ngx_http_supervisord_api_test_checker(ngx_http_upstream_srv_conf_t *us,
    ngx_uint_t backend)
{
    ngx_file_info_t                            fi;
    ngx_http_supervisord_api_test_srv_conf_t  *tcf;

    tcf = ngx_http_conf_upstream_srv_conf(us,
                                          ngx_http_supervisord_api_test_module);

    if (tcf->checker_file.len
        && ngx_file_info(tcf->checker_file.data, &fi) != NGX_FILE_ERROR)
    {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "api test: checker refuses backend %ui", backend);
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "api test: checker allows backend %ui", backend);

    return NGX_OK;
}


static ngx_int_t
ngx_http_supervisord_api_test_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    if (ngx_http_upstream_init_round_robin_peer(r, us) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_supervisord_check_servers(r);
}


static ngx_int_t
ngx_http_supervisord_api_test_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    if (ngx_http_upstream_init_round_robin(cf, us) != NGX_OK) {
        return NGX_ERROR;
    }

    us->peer.init = ngx_http_supervisord_api_test_init_peer;

    if (ngx_supervisord_add_backend_monitor(us,
            ngx_http_supervisord_api_test_backend_monitor) != NGX_OK
        || ngx_supervisord_add_load_monitor(us,
               ngx_http_supervisord_api_test_load_monitor) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a missing callback is refused */

    if (ngx_supervisord_add_backend_monitor(us, NULL) != NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "api test: a NULL backend monitor was accepted");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_supervisord_api_test_balancer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_supervisord_api_test_srv_conf_t *tcf = conf;

    ngx_str_t                     *value;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    uscf->peer.init_upstream = ngx_http_supervisord_api_test_init_upstream;
    uscf->flags = NGX_HTTP_UPSTREAM_CREATE
                  |NGX_HTTP_UPSTREAM_WEIGHT
                  |NGX_HTTP_UPSTREAM_MAX_FAILS
                  |NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
                  |NGX_HTTP_UPSTREAM_DOWN
                  |NGX_HTTP_UPSTREAM_BACKUP;

    if (cf->args->nelts == 2) {
        value = cf->args->elts;
        tcf->checker_file = value[1];
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_supervisord_api_test_arg(ngx_http_request_t *r, char *name,
    ngx_int_t *number)
{
    ngx_str_t  value;
    ngx_int_t  sign;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &value) != NGX_OK) {
        return NGX_DECLINED;
    }

    sign = 1;

    if (value.len > 1 && value.data[0] == '-') {
        sign = -1;
        value.data++;
        value.len--;
    }

    *number = ngx_atoi(value.data, value.len);

    if (*number == NGX_ERROR) {
        return NGX_DECLINED;
    }

    *number *= sign;

    return NGX_OK;
}


static ngx_int_t
ngx_http_supervisord_api_test_handler(ngx_http_request_t *r)
{
    u_char                         *p;
    ngx_int_t                       rc, command, backend, checker;
    ngx_str_t                       name;
    ngx_buf_t                      *b;
    ngx_uint_t                      i;
    ngx_chain_t                     out;
    ngx_http_upstream_srv_conf_t  **uscfp, *uscf;
    ngx_http_upstream_main_conf_t  *umcf;

    if (ngx_http_arg(r, (u_char *) "upstream", 8, &name) != NGX_OK
        || ngx_http_supervisord_api_test_arg(r, "cmd", &command) != NGX_OK
        || ngx_http_supervisord_api_test_arg(r, "backend", &backend) != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    if (ngx_http_supervisord_api_test_arg(r, "checker", &checker) != NGX_OK) {
        checker = 0;
    }

    umcf = ngx_http_get_module_main_conf(r, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;
    uscf = NULL;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        if (uscfp[i]->host.len == name.len
            && ngx_strncmp(uscfp[i]->host.data, name.data, name.len) == 0)
        {
            uscf = uscfp[i];
            break;
        }
    }

    if (uscf == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    rc = ngx_supervisord_execute(uscf, (ngx_uint_t) command, backend,
                                 checker ? ngx_http_supervisord_api_test_checker
                                         : NULL);

    b = ngx_create_temp_buf(r->pool, NGX_INT_T_LEN + sizeof("rc=\n"));
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(b->pos, "rc=%i\n", rc);
    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "text/plain");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static char *
ngx_http_supervisord_api_test_execute(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_supervisord_api_test_handler;

    return NGX_CONF_OK;
}
