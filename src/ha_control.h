/*
 * ha_control.h - the HA worker's actions on its own postgres (ha_control.c).
 */
#ifndef PG_HA_CONTROL_H
#define PG_HA_CONTROL_H

#include "pg_ha.h"

#include "conn_url.h"

extern char *build_primary_conninfo(const char *host, const char *port);
extern bool primary_conninfo_points_at(const char *host, const char *port);
extern void alter_system_set(const char *name, const char *value);
extern void reload_postmaster(void);
extern void follow_upstream(const char *name, bool is_leader, const char *host, const char *port);
extern void stop_streaming(void);
extern void demote_and_restart(const char *leader, const char *host, const char *port,
							   const char *why) pg_attribute_noreturn();
extern void promote_now(void);
extern bool timeline_parent(TimeLineID tli, TimeLineID *parent, XLogRecPtr *switch_lsn);
extern void terminate_client_backends(void);

#endif							/* PG_HA_CONTROL_H */
