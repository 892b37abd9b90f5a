//! Wire types: request bodies and response shapes with exactly the AWS JSON member names.
//! Kept apart from the domain types in `model`, which never see serde renames for the wire.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::time::lambda_timestamp;
use crate::model::{FunctionConfig, function_arn};

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCode {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentWire {
    #[serde(default)]
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorageWire {
    pub size: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingConfigWire {
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VpcConfigWire {
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetterConfigWire {
    pub target_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionRequest {
    pub function_name: Option<String>,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: Option<FunctionCode>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub publish: Option<bool>,
    pub package_type: Option<String>,
    pub environment: Option<EnvironmentWire>,
    pub ephemeral_storage: Option<EphemeralStorageWire>,
    pub architectures: Option<Vec<String>>,
    pub tracing_config: Option<TracingConfigWire>,
    pub dead_letter_config: Option<DeadLetterConfigWire>,
    pub layers: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<String>,
    pub vpc_config: Option<VpcConfigWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCodeRequest {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionConfigurationRequest {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<EnvironmentWire>,
    pub runtime: Option<String>,
    pub ephemeral_storage: Option<EphemeralStorageWire>,
    pub tracing_config: Option<TracingConfigWire>,
    pub dead_letter_config: Option<DeadLetterConfigWire>,
    pub layers: Option<Vec<String>>,
    pub revision_id: Option<String>,
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<String>,
    pub vpc_config: Option<VpcConfigWire>,
}

/// `FunctionConfiguration` (lambda-wire.md §1.3). `trimmed` drops the members that
/// ListFunctions omits (state and update status).
pub fn function_configuration(
    f: &FunctionConfig,
    region: &str,
    qualifier: Option<&str>,
    trimmed: bool,
) -> Value {
    let mut v = json!({
        "FunctionName": f.name,
        "FunctionArn": function_arn(region, &f.account, &f.name, qualifier),
        "Runtime": f.runtime,
        "Role": f.role,
        "Handler": f.handler,
        "CodeSize": f.code_size,
        "Description": f.description,
        "Timeout": f.timeout,
        "MemorySize": f.memory_size,
        "LastModified": lambda_timestamp(f.last_modified_ms),
        "CodeSha256": f.code_sha256,
        "Version": f.version,
        "TracingConfig": {"Mode": f.tracing_mode},
        "RevisionId": f.revision_id,
        "PackageType": "Zip",
        "Architectures": f.architectures,
        "EphemeralStorage": {"Size": f.ephemeral_storage},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", f.name)},
    });
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    if !f.environment.is_empty() {
        obj.insert("Environment".into(), json!({"Variables": f.environment}));
    }
    if !f.vpc_subnet_ids.is_empty() {
        obj.insert(
            "VpcConfig".into(),
            json!({
                "SubnetIds": f.vpc_subnet_ids,
                "SecurityGroupIds": f.vpc_security_group_ids,
                "VpcId": "",
            }),
        );
    }
    if let Some(t) = &f.dead_letter_target {
        obj.insert("DeadLetterConfig".into(), json!({"TargetArn": t}));
    }
    if let Some(k) = &f.kms_key_arn {
        obj.insert("KMSKeyArn".into(), json!(k));
    }
    if !f.layers.is_empty() {
        let layers: Vec<Value> = f
            .layers
            .iter()
            .map(|arn| json!({"Arn": arn, "CodeSize": 0}))
            .collect();
        obj.insert("Layers".into(), Value::Array(layers));
    }
    if !trimmed {
        obj.insert("State".into(), json!("Active"));
        obj.insert("LastUpdateStatus".into(), json!("Successful"));
    }
    v
}
