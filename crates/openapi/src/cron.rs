//! The cron routes (api-v2 §6 "Crons"): `cron/add`, `start`, `stop`, `delete`, `detail`
//! (alias `info`) and **ext** `cron/list`, validated in their documented order, then the cron
//! module over the bus.

use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::tz::TimeZone;
use elves_rpc::cron::{AddCron, CronAction, CronDetail, CronList, OperateCron};
use elves_sign::Params;
use elves_types::validate::{is_blank, is_ipv4, parse_mode};
use elves_types::{ApiError, ErrorCode};
use serde_json::{Value, json};

use crate::access::Owned;
use crate::routes::{Ctx, call, job_spec, trimmed};

/// `cron_id`: present and 16 characters long, else 403.9.
fn cron_id(params: &Params) -> Result<String, ErrorCode> {
    let id = trimmed(params, "cron_id");
    if id.chars().count() != 16 {
        return Err(ErrorCode::CronIdIllegal);
    }
    Ok(id)
}

/// `rule` (Quartz, via cron-expr) and the **ext** `tz` and `misfire` that shape it: 403.5.
fn rule(params: &Params) -> Result<(String, String, String), ErrorCode> {
    let rule = trimmed(params, "rule");
    if Schedule::parse_quartz(&rule).is_err() {
        return Err(ErrorCode::CronRuleIllegal);
    }
    let tz = trimmed(params, "tz");
    if !tz.is_empty() && TimeZone::get(&tz).is_err() {
        return Err(ErrorCode::CronRuleIllegal);
    }
    let misfire = trimmed(params, "misfire");
    if !matches!(misfire.as_str(), "" | "fire_once" | "skip") {
        return Err(ErrorCode::CronRuleIllegal);
    }
    Ok((rule, tz, misfire))
}

pub async fn serve(
    action: &str,
    params: &Params,
    ctx: &Ctx<'_>,
) -> Result<Option<Value>, ApiError> {
    match action {
        "add" => {
            // app, func, ip, param, timeout (as rt/exec), then rule, then mode.
            let job = job_spec(params)?;
            let (rule, tz, misfire) = rule(params)?;
            let mode = parse_mode(params.get("mode")).ok_or(ErrorCode::ModeIllegal)?;
            ctx.gate
                .permit(
                    ctx.bus,
                    ctx.caller,
                    Some(&job.app),
                    Some(&job.ip),
                    Owned::Nothing,
                )
                .await?;
            let msg = AddCron {
                ip: job.ip,
                app: job.app,
                func: job.func,
                mode: mode.to_owned(),
                param: job.param,
                timeout: job.timeout,
                proxy: job.proxy,
                rule,
                tz,
                misfire,
                owner: ctx.caller.auth_id().to_owned(),
            };
            let id = call(ctx.bus, msg).await?;
            Ok(Some(json!({ "id": id })))
        }
        "start" | "stop" | "delete" => {
            let cron_id = cron_id(params)?;
            ctx.gate
                .permit(ctx.bus, ctx.caller, None, None, Owned::Cron(&cron_id))
                .await?;
            let action = match action {
                "start" => CronAction::Start,
                "stop" => CronAction::Stop,
                _ => CronAction::Delete,
            };
            call(ctx.bus, OperateCron { cron_id, action }).await?;
            Ok(None)
        }
        "detail" | "info" => {
            let cron_id = cron_id(params)?;
            ctx.gate
                .permit(ctx.bus, ctx.caller, None, None, Owned::Cron(&cron_id))
                .await?;
            Ok(Some(call(ctx.bus, CronDetail { cron_id }).await?))
        }
        "list" => {
            let ip = if is_blank(params.get("ip")) {
                None
            } else {
                let ip = params.get("ip").unwrap_or_default();
                if !is_ipv4(ip) {
                    return Err(ErrorCode::IpIllegal.into());
                }
                Some(ip.to_owned())
            };
            ctx.gate
                .permit(ctx.bus, ctx.caller, None, ip.as_deref(), Owned::Nothing)
                .await?;
            // The key's app in supervisor mode (every key of the app sees its crons); every
            // cron in simple mode, where the one key may do everything.
            let app = ctx.caller.app().map(str::to_owned);
            let ids = call(ctx.bus, CronList { app, ip }).await?;
            Ok(Some(json!(ids)))
        }
        _ => Err(ApiError::internal("unknown cron route")),
    }
}
