//! The storage suite: the same cases against the memory, SQLite and
//! Postgres stores, plus Postgres-only tests.
//!
//! The Postgres tests need `TENET_TEST_DATABASE_URL` (see
//! [`database::database_url`]); each runs in a schema of its own.

mod backend;
mod batching;
mod cases;
mod database;
mod postgres;
mod proxy;
mod service;
mod stats;
mod usage;

/// Generates one `#[tokio::test]` per case for a backend: the common
/// store and service cases, then any backend-specific ones listed after
/// the opener.
macro_rules! backend_suite {
    ($module:ident, $open:path $(, $group:ident :: $case:ident)* $(,)?) => {
        mod $module {
            backend_suite!(@cases $open;
                cases::tenant_round_trips,
                cases::tenants_list_oldest_first,
                cases::tenants_page_after_id,
                cases::keys_page_stays_stable_while_keys_are_added,
                cases::key_for_missing_tenant_is_not_found,
                cases::keys_list_per_tenant,
                cases::revoke_keeps_first_time,
                cases::revoke_of_other_tenant_key_is_none,
                cases::key_found_by_digest,
                cases::duplicate_digest_is_rejected,
                cases::init_setting_first_writer_wins,
                cases::concurrent_init_setting_agrees,
                cases::timestamps_round_trip_exactly,
                cases::names_round_trip,
                cases::ping_succeeds,
                cases::expiry_and_scopes_round_trip,
                cases::rotate_shortens_expiry_and_inserts,
                cases::rotate_with_revoke_and_missing_key,
                cases::rotated_key_does_not_rotate_again,
                cases::expired_key_does_not_rotate,
                cases::concurrent_rotations_have_one_winner,
                cases::tenant_limits_round_trip,
                cases::tenant_limits_of_missing_tenant,
                cases::key_limit_set_replaced_and_removed,
                cases::key_limit_of_other_tenant_writes_nothing,
                cases::key_limit_of_revoked_key_writes_nothing,
                cases::key_inserts_with_its_limit,
                cases::rotation_writes_the_replacement_limit,
                cases::limit_changes_are_audited,
                cases::tenant_status_changes_and_repeats,
                cases::rename_keeps_other_fields,
                cases::delete_revokes_keys_and_hides_tenant,
                cases::deleted_tenant_rejects_every_change,
                cases::audit_entries_round_trip,
                cases::audit_records_each_change_per_tenant,
                cases::audit_pages_after_id,
                cases::key_and_tenant_read_together,
                service::issued_key_verifies,
                service::revoked_key_is_rejected,
                service::unknown_key_is_rejected,
                service::other_pepper_is_config_error,
                service::expired_key_is_rejected,
                service::scopes_are_required,
                service::invalid_expiry_is_rejected,
                service::rotated_key_ends_after_grace,
                service::expired_key_rotation_is_rejected,
                service::replacement_keeps_unexpired_expiry,
                service::key_rotates_only_once,
                service::revoked_rotated_key_names_successor,
                service::revoked_key_rejects_rotation_and_limit,
                service::parallel_rotations_leave_one_successor,
                service::rotation_expiry_is_capped,
                service::suspended_tenant_keys_are_rejected,
                service::deleted_tenant_keeps_only_its_audit,
                service::audit_trail_records_actor_and_target,
                service::issue_and_rotate_keep_the_limit,
                service::limit_changes_record_actor,
                service::one_key_reads_find_keys_among_many,
                service::concurrent_misses_share_one_read,
                usage::metadata_round_trips_and_survives_rotation,
                usage::last_used_never_moves_backwards,
                usage::key_uses_coalesce_into_one_write,
                usage::key_uses_coalesce_with_a_cache,
                usage::usage_totals_match_after_flush,
                usage::usage_adds_to_stored_rows,
                usage::accepted_usage_sums_one_month,
                usage::flushed_usage_seeds_a_new_quota_count,
                usage::unflushed_usage_counts_in_the_month,
                $($group :: $case,)*
            );
        }
    };
    (@cases $open:path; $($group:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $open().await else {
                    return;
                };
                crate::$group::$case(&backend).await;
            }
        )*
    };
}

backend_suite!(on_memory, crate::backend::memory);
backend_suite!(
    on_sqlite,
    crate::backend::sqlite,
    service::reopen_keeps_tenants_keys_and_revocations,
    usage::replicas_flushing_one_hour_sum_up,
);
backend_suite!(
    on_postgres,
    crate::backend::postgres,
    service::reopen_keeps_tenants_keys_and_revocations,
    usage::replicas_flushing_one_hour_sum_up,
);
