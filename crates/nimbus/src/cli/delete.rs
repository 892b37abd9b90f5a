//! `nimbus delete NAME`: deletes a function (its logs stay, as on Lambda).

use std::io::Write;

use super::client::{Client, segment};

pub async fn run(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .lambda(
            "DELETE",
            &format!("/2015-03-31/functions/{}", segment(name)),
            "",
            None,
        )
        .await?
        .json()?;
    writeln!(std::io::stdout(), "deleted {name}")?;
    Ok(())
}
