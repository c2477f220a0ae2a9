//! Access keys: at most two per user (AWS's quota), found through the user's key index.

use serde_json::json;

use crate::core::model::{self, AccessKey, AccessKeyStatus, RECORD_VERSION, User};
use crate::core::secret::SecretString;
use crate::store::{self, Table, Tx};

use super::super::sts::access_key_hash;
use super::super::{Broker, BrokerError, Caller, RequestMeta, unix_ms};
use super::index::{indexed, set_user_key_ids, user_key_ids};
use super::{MAX_ACCESS_KEYS, Page, not_found, slice_page};

impl Broker {
    pub async fn create_access_key(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(AccessKey, SecretString), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let now = unix_ms(self.now());
        // Drawn up front so the audit event names the key it created.
        let id = model::access_key_id("AKIA", &self.random::<16>()?);
        let secret = SecretString::new(data_encoding::BASE64.encode(&self.random::<30>()?));
        let record = AccessKey {
            v: RECORD_VERSION,
            access_key_id: id.clone(),
            user_name: user.clone(),
            secret_hash: access_key_hash(&id, secret.expose()),
            status: AccessKeyStatus::Active,
            create_date: now,
            last_used: None,
        };
        let params = json!({"user_name": user, "access_key_id": id});
        self.iam_change(caller, meta, "iam:CreateAccessKey", params, |tx, gate| {
            gate.load::<User>(tx, &user, vec![])?;
            // Only this user's index record is read (and is the precondition).
            let mut ids = user_key_ids(tx, &user)?;
            if ids.len() >= MAX_ACCESS_KEYS {
                return Err(BrokerError::LimitExceeded(format!(
                    "user {user} already has {MAX_ACCESS_KEYS} access keys"
                )));
            }
            ids.push(id.clone());
            tx.put(Table::AccessKeys, &id, &record);
            set_user_key_ids(tx, &user, &ids);
            Ok(())
        })
        .await?;
        Ok((record, secret))
    }

    /// UpdateAccessKey (`Some(status)`) or DeleteAccessKey.
    pub async fn update_access_key(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        access_key_id: &str,
        status: Option<AccessKeyStatus>,
    ) -> Result<(), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let action = if status.is_some() {
            "iam:UpdateAccessKey"
        } else {
            "iam:DeleteAccessKey"
        };
        let params = json!({"user_name": user, "access_key_id": access_key_id, "status": status.map(|s| s.as_str())});
        self.iam_change(caller, meta, action, params, |tx, gate| {
            gate.load::<User>(tx, &user, vec![])?;
            let mut key: AccessKey = tx
                .get::<AccessKey>(Table::AccessKeys, access_key_id)?
                .filter(|k: &AccessKey| k.user_name.eq_ignore_ascii_case(&user))
                .ok_or_else(|| not_found("access key", access_key_id))?;
            match status {
                Some(status) => {
                    key.status = status;
                    tx.put(Table::AccessKeys, access_key_id, &key);
                }
                None => {
                    let mut ids = user_key_ids(tx, &user)?;
                    ids.retain(|i| i != access_key_id);
                    tx.delete(Table::AccessKeys, access_key_id);
                    set_user_key_ids(tx, &user, &ids);
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn list_access_keys(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        page: &Page,
    ) -> Result<(Vec<AccessKey>, Option<String>), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let action = "iam:ListAccessKeys";
        let (_, arn, keys) = self.entity::<User>(action, &user)?;
        self.iam_read(
            caller,
            meta,
            action,
            &arn,
            &keys,
            json!({"user_name": user}),
            || {
                slice_page(
                    &self.access_keys_of(&user)?,
                    |k| k.access_key_id.clone(),
                    page,
                )
            },
        )
        .await
    }

    /// A user's keys: through the index when the store has one.
    fn access_keys_of(&self, user: &str) -> Result<Vec<AccessKey>, BrokerError> {
        let mut tx = Tx::new(self.store.as_ref());
        if !indexed(&mut tx)? {
            return Ok(store::read_page::<AccessKey>(
                self.store.as_ref(),
                Table::AccessKeys,
                "",
                None,
                usize::MAX,
            )?
            .into_iter()
            .map(|(_, k)| k)
            .filter(|k: &AccessKey| k.user_name.eq_ignore_ascii_case(user))
            .collect());
        }
        let mut keys = Vec::new();
        for id in user_key_ids(&mut tx, user)? {
            if let Some(key) = tx.get::<AccessKey>(Table::AccessKeys, &id)? {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
        Ok(keys)
    }

    pub async fn get_access_key_last_used(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        access_key_id: &str,
    ) -> Result<AccessKey, BrokerError> {
        let action = "iam:GetAccessKeyLastUsed";
        let key: Option<AccessKey> =
            store::read(self.store.as_ref(), Table::AccessKeys, access_key_id)?;
        let (arn, keys) = match &key {
            Some(k) => {
                let (_, arn, keys) = self.entity::<User>(action, &k.user_name)?;
                (arn, keys)
            }
            None => (self.account().user_arn("/", "*"), vec![]),
        };
        self.iam_read(
            caller,
            meta,
            action,
            &arn,
            &keys,
            json!({"access_key_id": access_key_id}),
            || {
                key.clone()
                    .ok_or_else(|| not_found("access key", access_key_id))
            },
        )
        .await
    }
}
