pub struct SyntheticConfig;
